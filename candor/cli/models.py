"""`candor list`, `rm`, `cp` and `import`: the names in the store, and what each really is."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from candor.identity import format_count
from candor.store.library import ListedModel, copy_model, import_model, list_models, remove_model


def register(sub: Any) -> None:
    """Add the `list`, `rm`, `cp` and `import` commands."""
    listing = sub.add_parser(
        "list",
        aliases=["ls"],
        help="list models with what each really is",
        description="List the store's models, each beside the identity read from its file; a name that "
        "claims something the file contradicts is flagged.",
        epilog="example: candor list --json",
    )
    listing.add_argument("--json", action="store_true", help="print JSON for machines")
    listing.set_defaults(handler=handle_list)

    rm = sub.add_parser(
        "rm",
        help="remove a model's name",
        epilog="example: candor rm hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
        description="Remove a name. Files are deleted only when candor owns them and no other name uses "
        "them; a file in the Hugging Face cache or an Ollama store is never deleted.",
    )
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(handler=handle_rm)

    cp = sub.add_parser(
        "cp",
        help="give a model another name",
        description="Give a model a second name; the file is shared, not copied.",
        epilog="example: candor cp gemma-3-270m:Q4_K_M tiny",
    )
    cp.add_argument("source", metavar="SRC")
    cp.add_argument("destination", metavar="DST")
    cp.set_defaults(handler=handle_cp)

    imp = sub.add_parser(
        "import",
        help="register a local .gguf without copying it",
        description="Register a local GGUF file under a name; it is checked and test-loaded, not copied.",
        epilog="example: candor import ./Qwen2.5-0.5B-Instruct-Q4_K_M.gguf --name qwen2.5:0.5b",
    )
    imp.add_argument("path", metavar="PATH.gguf")
    imp.add_argument("--name", help="name[:tag] (default: the file name)")
    imp.set_defaults(handler=handle_import)


def _modified(entry_time: str) -> str:
    try:
        return datetime.fromisoformat(entry_time).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return entry_time


def _row(model: ListedModel) -> dict[str, Any]:
    card = model.card
    return {
        "name": model.entry.name,
        "identity": card.summary() if card else None,
        "architecture": card.architecture if card else None,
        "parameters": card.parameter_count if card else None,
        "parameter_label": card.parameter_label if card else None,
        "quantization": card.file_type if card else None,
        "finetune": card.finetune if card else None,
        "base_models": [b.label() for b in card.base_models] if card else [],
        "size": model.entry.size,
        "modified": model.entry.modified_at,
        "source": model.entry.source,
        "usable": model.entry.usable and model.problem is None,
        "problem": model.problem,
        "name_claims": [c.message for c in model.claims],
    }


def handle_list(args: argparse.Namespace) -> int:
    """Print the table (or JSON)."""
    rows = [_row(m) for m in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = []
    for row in rows:
        if row["architecture"]:
            kind = f"{row['architecture']} {row['parameter_label']}"
            if row["finetune"]:
                kind += f" {row['finetune'].lower()}"
        else:
            kind = "unreadable"
        table.append(
            (
                row["name"],
                kind,
                row["quantization"] or "-",
                format_count(row["size"]) + "B",
                _modified(row["modified"]),
            )
        )
    headers = ("NAME", "IS REALLY", "QUANT", "SIZE", "MODIFIED")
    widths = [max(len(str(r[i])) for r in (headers, *table)) for i in range(len(headers))]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for cells, row in zip(table, rows, strict=True):
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        for claim in row["name_claims"]:
            print(f"    ! misleading name: {claim}")
        if row["problem"]:
            print(f"    ! cannot run: {row['problem']}")
    return 0


def handle_rm(args: argparse.Namespace) -> int:
    """Remove each name, saying what happened to its files."""
    for name in args.names:
        removal = remove_model(name)
        print(f"deleted '{removal.entry.name}'")
        for path in removal.deleted:
            print(f"  removed file {path}")
        for path, why in removal.kept:
            print(f"  kept {path}: {why}", file=sys.stderr)
    return 0


def handle_cp(args: argparse.Namespace) -> int:
    """Copy a name."""
    entry = copy_model(args.source, args.destination)
    print(f"copied '{args.source}' to '{entry.name}'")
    return 0


def handle_import(args: argparse.Namespace) -> int:
    """Import one file."""
    entry = import_model(args.path, name=args.name)
    model = next(m for m in list_models() if m.entry.name == entry.name)
    print(f"imported {entry.path} as '{entry.name}' (no bytes copied)")
    if model.card:
        print(f"  it is: {model.card.lineage()}")
    for claim in model.claims:
        print(f"  ! misleading name: {claim.message}")
    return 0
