"""What the scripts in benchmarks/ share: candor's speed measured through its library, llama.cpp's own
tools run as subprocesses, and how a series of figures is printed.

The scripts run as `python benchmarks/NAME.py`, which puts this folder on sys.path.
"""

from __future__ import annotations

import socket
import statistics
import time

import httpx

# `candor bench` measures with the same functions: one definition of each figure for both.
from candor.cli.bench import concurrent_decode_rate, decode_rate, prefill_rate
from candor.cli.llama_tools import (
    find_llama_tools,
    held_in_ram,
    llama_batched_bench,
    llama_bench,
    tools_build,
)
from candor.diagnostics import candor_build

__all__ = [
    "candor_build",
    "concurrent_decode_rate",
    "decode_rate",
    "find_llama_tools",
    "free_port",
    "held_in_ram",
    "llama_batched_bench",
    "llama_bench",
    "prefill_rate",
    "spread",
    "tools_build",
    "wait_ready",
]


def spread(values: list[float]) -> str:
    """median [min..max]."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, path: str, timeout: float = 180) -> None:
    """Return once `url + path` answers 200; exit the script if it does not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not start")
