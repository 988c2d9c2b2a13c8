"""What the scripts in benchmarks/ share: candor's speed measured through its library, llama.cpp's own
tools run as subprocesses, and how a series of figures is printed.

The scripts run as `python benchmarks/NAME.py`, which puts this folder on sys.path.
"""

from __future__ import annotations

import statistics

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
    "held_in_ram",
    "llama_batched_bench",
    "llama_bench",
    "prefill_rate",
    "spread",
    "tools_build",
]


def spread(values: list[float]) -> str:
    """median [min..max]."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"
