"""The `candor` command line: a client of the library API, never of llama_cpp."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from candor import __version__
from candor.config import read
from candor.errors import CandorError

# Command (or alias) -> the module under candor.cli that defines it, in `candor --help`'s order. Only the
# module of the command being run is imported: `candor ps` should not load llama.cpp nor the hub client.
COMMANDS: dict[str, str] = {
    "run": "run",
    "serve": "serve",
    "ps": "ps",
    "stop": "ps",
    "pull": "pull",
    "show": "show",
    "list": "models",
    "ls": "models",
    "rm": "models",
    "cp": "models",
    "import": "models",
    "import-ollama": "import_ollama",
    "licenses": "licenses",
    "license": "licenses",
    "plan": "plan",
    "bench": "bench",
    "doctor": "doctor",
}


class CommandParser(argparse.ArgumentParser):
    """A command's parser: its flags may come anywhere among its words (`candor run MODEL --temperature 0
    PROMPT`), and a usage error shows this command's usage, not the top level's."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse flags and positionals in any order; an unknown word is this command's usage error."""
        if self._intermixing:  # parse_known_intermixed_args calls back here for each of its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:  # left to the top-level parser, the error would show `candor`'s usage
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser, with the sub-parsers of the named command modules (None: all of them)."""
    parser = argparse.ArgumentParser(
        prog="candor",
        description="Run GGUF models locally on upstream llama.cpp.",
        epilog='example: candor run "Why is the sky blue?"',
    )
    parser.add_argument("--version", action="version", version=f"candor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for module in dict.fromkeys(COMMANDS.values() if modules is None else modules):
        importlib.import_module(f"candor.cli.{module}").register(sub)
    return parser


def _modules_for(words: Sequence[str]) -> list[str] | None:
    """The command modules a command line needs: its command's; none for `--version`; all (None) for
    help, for no command at all, and for an unknown command (argparse then lists the choices)."""
    if words and words[0] in COMMANDS:
        return [COMMANDS[words[0]]]
    if words and all(w.startswith("-") and w not in ("-h", "--help") for w in words):
        return []
    return None


class _UserFormatter(logging.Formatter):
    """Records as a user reads them ("warning: ..."); the module name only helps when debugging."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        return text + "\n" + self.formatException(record.exc_info) if record.exc_info else text


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run one command, and turn candor errors into a one-line message."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_modules_for(words))
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return 0
    debug = bool(read("CANDOR_DEBUG"))
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s") if debug else _UserFormatter())
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
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
