"""The `candor` command line: a client of the library API, never of llama_cpp."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from candor import __version__
from candor.cli import bench, doctor, import_ollama, licenses, models, plan, ps, pull, run, serve, show
from candor.errors import CandorError

COMMANDS = (run, serve, ps, pull, show, models, import_ollama, licenses, plan, bench, doctor)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command module."""
    parser = argparse.ArgumentParser(
        prog="candor",
        description="Run GGUF models locally on upstream llama.cpp.",
        epilog='example: candor run "Why is the sky blue?"',
    )
    parser.add_argument("--version", action="version", version=f"candor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run one command, and turn candor errors into a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = bool(os.environ.get("CANDOR_DEBUG"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except CandorError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (`candor run ... | head`): not an error worth a trace.
        sys.stderr.close()
        return 0
    except Exception as exc:  # last line of defence: no traceback reaches a user unless asked
        if debug:
            raise
        print(
            f"Error: unexpected {type(exc).__name__}: {exc}. Run again with CANDOR_DEBUG=1 for details "
            "and report it.",
            file=sys.stderr,
        )
        return 2
