"""`candor ps` and `candor stop`: the models a running candor server holds, and unloading one."""

from __future__ import annotations

import argparse
from typing import Any

from candor.cli.server_option import add_host_option, required_server
from candor.client import call


def register(sub: Any) -> None:
    """Add the `ps` and `stop` commands."""
    ps = sub.add_parser(
        "ps",
        help="list the models a running candor server has loaded",
        description=__doc__,
        epilog="examples: candor ps; candor ps --host 192.168.1.5:11434",
    )
    add_host_option(ps)
    ps.set_defaults(handler=handle_ps)
    stop = sub.add_parser(
        "stop",
        help="unload a model from a running candor server",
        description=__doc__,
        epilog="example: candor stop gemma-3-270m:Q4_K_M",
    )
    stop.add_argument("model", metavar="MODEL")
    add_host_option(stop)
    stop.set_defaults(handler=handle_stop)


def handle_ps(args: argparse.Namespace) -> int:
    """Print the loaded models."""
    models = call(required_server(args.host), "GET", "/api/ps")["models"]
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
    call(required_server(args.host), "POST", "/api/generate", {"model": args.model, "keep_alive": 0})
    print(f"stopped {args.model}")
    return 0
