"""`candor ps` and `candor stop`: the models a running candor server holds, and unloading one."""

from __future__ import annotations

import argparse
from typing import Any

from candor.client import call, running_server, server_url
from candor.errors import CandorError


def register(sub: Any) -> None:
    """Add the `ps` and `stop` commands."""
    ps = sub.add_parser(
        "ps",
        help="list the models a running candor server has loaded",
        description=__doc__,
        epilog="examples: candor ps; candor ps --host 192.168.1.5:11434",
    )
    _add_host(ps)
    ps.set_defaults(handler=handle_ps)
    stop = sub.add_parser(
        "stop",
        help="unload a model from a running candor server",
        description=__doc__,
        epilog="example: candor stop gemma-3-270m:Q4_K_M",
    )
    stop.add_argument("model", metavar="MODEL")
    _add_host(stop)
    stop.set_defaults(handler=handle_stop)


def _add_host(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        metavar="HOST[:PORT]",
        help="the candor server to ask (CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1:11434)",
    )


def _server(host: str | None) -> str:
    url = server_url(host)
    base = running_server(url)
    if base is None:
        raise CandorError(
            f"no candor server is running at {url}; start one with `candor serve` "
            "(without one, each `candor run` loads its model for itself and frees it when done)"
        )
    return base


def handle_ps(args: argparse.Namespace) -> int:
    """Print the loaded models."""
    models = call(_server(args.host), "GET", "/api/ps")["models"]
    rows = [("NAME", "SIZE", "CONTEXT", "UNTIL")]
    for m in models:
        until = "forever" if m["expires_at"].startswith("0001") else m["expires_at"]
        rows.append((m["name"], f"{m['size'] / 1e6:.0f} MB", str(m["context_length"]), until))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def handle_stop(args: argparse.Namespace) -> int:
    """Unload one model now."""
    call(_server(args.host), "POST", "/api/generate", {"model": args.model, "keep_alive": 0})
    print(f"stopped {args.model}")
    return 0
