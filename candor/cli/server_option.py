"""`--host`: which running candor server a command talks to."""

from __future__ import annotations

import argparse

from candor.client import running_server, server_url
from candor.errors import CandorError


def add_host_option(parser: argparse.ArgumentParser, *, what: str = "the candor server to ask") -> None:
    """Add `--host HOST[:PORT]` (else CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1:11434)."""
    parser.add_argument(
        "--host",
        metavar="HOST[:PORT]",
        help=f"{what} (CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1:11434)",
    )


def required_server(host: str | None) -> str:
    """The base URL of the candor server at `host`; an error that says how to start one if none answers."""
    url = server_url(host)
    base = running_server(url)
    if base is None:
        raise CandorError(
            f"no candor server is running at {url}; start one with `candor serve` "
            "(without one, each `candor run` loads its model for itself and frees it when done)"
        )
    return base
