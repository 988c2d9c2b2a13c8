"""`candor licenses [MODEL]`: the engine's notices, or a model's licence and its full text."""

from __future__ import annotations

import argparse
from typing import Any

from candor.manage import licenses


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
    if isinstance(result, str):
        print(result)
        return 0
    print(f"{result.model}")
    print(f"  license (from the file's metadata): {result.license or 'not stated'}")
    if result.license_name:
        print(f"  license name: {result.license_name}")
    if result.license_link:
        print(f"  license link: {result.license_link}")
    if not result.texts:
        print("  no licence text came with this model; check where you got it from")
    for path, text in result.texts:
        print(f"\n===== {path} =====\n")
        print(text)
    return 0
