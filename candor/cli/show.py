"""`candor show`: what a model really is, read from its GGUF metadata and tensor shapes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from candor.identity import ModelCard
from candor.prompt import describe_options
from candor.store.library import ModelDescription, describe_model

EXAMPLES = """examples:
  candor show                              the embedded default model
  candor show ./DeepSeek-R1-Distill-Qwen-32B-Q4_K_M.gguf
  candor show gemma-3-270m:Q4_K_M --json
"""


def register(sub: Any) -> None:
    """Add the `show` command."""
    parser = sub.add_parser(
        "show",
        help="show what a model really is",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="a .gguf path or model name (default model)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument("--template", action="store_true", help="print only the chat template candor uses")
    parser.set_defaults(handler=handle)


def describe(model: str | None) -> dict[str, Any]:
    """Everything `show` reports, as JSON-able data."""
    return as_json(describe_model(model, digest=True))


def as_json(described: ModelDescription) -> dict[str, Any]:
    """A model's description as `show --json` prints it."""
    card, fmt = described.readable()
    data = card.to_dict()
    data["sha256"] = described.sha256
    data["chat_format"] = {
        "source": fmt.source,
        "name": fmt.name,
        "fallback": fmt.is_fallback,
        "description": fmt.describe(),
        "template": fmt.template,
        "stop": list(fmt.stop),
        "defaults": dict(fmt.options),  # Ollama-named options chat answers start from
    }
    entry = described.entry
    data["store"] = {k: v for k, v in entry.to_json().items() if k != "path"} if entry else None
    data["name_claims"] = [c.message for c in described.name_claims]
    data["license_texts"] = [str(p) for p in described.license_files]
    return data


def handle(args: argparse.Namespace) -> int:
    """Print the model's identity."""
    described = describe_model(args.model, digest=True)
    data = as_json(described)
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.template:
        print(data["chat_format"]["template"])
    else:
        print_card(data, described.readable()[0])
    return 0


def _mib(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _source(store: dict[str, Any] | None) -> str | None:
    if not store:
        return None
    origin = store.get("origin", {})
    where = origin.get("repo") or origin.get("ollama_name") or origin.get("path") or origin.get("package")
    return f"{store['source']}: {where}" if where else store["source"]


def _defaults(options: dict[str, Any]) -> str | None:
    if not options:
        return None
    return (
        f"{describe_options(options)} (no chat template of its own; chat only, not raw; any option overrides)"
    )


def print_card(data: dict[str, Any], card: ModelCard) -> None:
    """Human-readable sections, in the spirit of `ollama show`."""
    out = sys.stdout
    histogram = ", ".join(f"{name} x{count}" for name, count in data["tensor_types"].items())
    quant = data["file_type"] + (" (inferred from tensor types)" if data["file_type_inferred"] else "")
    sections: list[tuple[str, list[tuple[str, Any]]]] = [
        (
            "Identity",
            [
                ("what it is", card.lineage()),
                ("store name", data["store"]["name"] if data["store"] else None),
                *(("name claim", f"MISLEADING: {claim}") for claim in data["name_claims"]),
                ("name", data["name"]),
                ("basename", data["basename"]),
                ("finetune", data["finetune"]),
                ("size label", data["size_label"]),
                ("organization", data["organization"]),
                ("base models", "; ".join(b.label() for b in card.base_models) or None),
            ],
        ),
        (
            "Model",
            [
                ("architecture", data["architecture"]),
                (
                    "parameters",
                    f"{data['parameter_label']} ({data['parameter_count']:,}, counted from tensor shapes)",
                ),
                ("quantization", quant),
                ("tensor types", histogram),
                ("context length", data["context_length"]),
                ("embedding length", data["embedding_length"]),
                ("layers", data["block_count"]),
                ("attention heads", f"{data['head_count']} (key/value heads {data['head_count_kv']})"),
                (
                    "vocabulary",
                    f"{data['vocab_size']:,} tokens ({data['tokenizer_model']} tokenizer)"
                    if data["vocab_size"]
                    else None,
                ),
            ],
        ),
        (
            "Chat template",
            [
                ("used", data["chat_format"]["description"]),
                ("stops at", ", ".join(json.dumps(s) for s in data["chat_format"]["stop"]) or None),
                ("answer defaults", _defaults(data["chat_format"]["defaults"])),
            ],
        ),
        (
            "License",
            [
                ("license", data["license"]),
                ("license name", data["license_name"]),
                ("license link", data["license_link"]),
                ("full text", "; ".join(data["license_texts"]) or None),
            ],
        ),
        (
            "File",
            [
                ("path", data["path"]),
                ("source", _source(data["store"])),
                ("size", f"{_mib(data['file_size'])} ({data['file_size']:,} bytes)"),
                ("sha256", data["sha256"]),
                ("GGUF version", data["gguf_version"]),
            ],
        ),
    ]
    for title, rows in sections:
        shown = [(k, v) for k, v in rows if v is not None and v != ""]
        if not shown:
            continue
        print(f"  {title}", file=out)
        for key, value in shown:
            print(f"    {key:<18}{value}", file=out)
        print(file=out)
