"""`candor licenses [MODEL]`: the engine's notices, or a model's licence and its full text."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from candor.store.library import ModelLicense, licenses


def register(sub: Any) -> None:
    """Add the `licenses` command."""
    parser = sub.add_parser(
        "licenses",
        aliases=["license"],
        help="show the notices candor ships, or a model's licence",
        description=__doc__,
        epilog="examples: candor licenses; candor licenses gemma-3-270m:Q4_K_M",
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="a model name or .gguf path")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the notices or the model's licence."""
    result = licenses(args.model)
    print(result if isinstance(result, str) else describe(result))
    return 0


def describe(result: ModelLicense) -> str:
    """A model's licence as `candor licenses MODEL` prints it (and the chat's /show license)."""
    return describe_license(
        result.model,
        license=result.license,
        name=result.license_name,
        link=result.license_link,
        texts=[(str(path), text) for path, text in result.texts],
    )


def describe_license(
    model: str,
    *,
    license: str | None,
    name: str | None,
    link: str | None,
    texts: Sequence[tuple[str, str]],
) -> str:
    """The metadata's licence fields, then each licence text that came with the model, under its source."""
    lines = [model, f"  license (from the file's metadata): {license or 'not stated'}"]
    if name:
        lines.append(f"  license name: {name}")
    if link:
        lines.append(f"  license link: {link}")
    if not texts:
        lines.append("  no licence text came with this model; check where you got it from")
    for source, text in texts:
        lines += ["", f"===== {source} =====", "", text]
    return "\n".join(lines)
