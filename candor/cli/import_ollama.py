"""`candor import-ollama`: use the models Ollama has downloaded, in place, without copying a byte.

Each model's GGUF blob is checked (digest, header, a load test in a child process); one that this
llama.cpp cannot run is still listed, as unusable, with the reason. Ollama's chat templates (Go
templates) are ignored: candor uses the GGUF's own. Re-run it after `ollama pull` to pick up changes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from candor.store.library import import_ollama

EXAMPLES = """examples:
  candor import-ollama                             $OLLAMA_MODELS, else ~/.ollama/models
  candor import-ollama /usr/share/ollama/.ollama/models   the Linux service's store
  candor import-ollama --no-probe                  skip the load test (faster, less sure)
"""


def register(sub: Any) -> None:
    """Add the `import-ollama` command."""
    parser = sub.add_parser(
        "import-ollama",
        help="use the models Ollama has downloaded, without copying them",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        type=Path,
        help="Ollama's models folder (default: $OLLAMA_MODELS, else ~/.ollama/models)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not test-load each model in llama.cpp (the header is still checked)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Import every Ollama model and print one line per model, then a summary."""
    results = import_ollama(args.dir, probe=not args.no_probe)
    for result in results:
        shown = result.name or result.ollama_name
        if result.status == "imported":
            print(f"imported  {shown}")
        else:
            print(f"{result.status:<9} {shown}: {result.reason}")
    counts = Counter(result.status for result in results)
    if not results:
        print("Ollama's store has no models; pull one with `ollama pull NAME`, then run this again")
        return 0
    print(
        f"{counts['imported']} imported, {counts['unusable']} unusable, {counts['skipped']} skipped; "
        "see `candor list`"
    )
    return 0
