"""Entry point of a runner process: `python -m candor.scheduler.runner_child FD`.

A plain subprocess with an inherited socket, not multiprocessing's spawn, so that a library user's
script is never re-imported in the child.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from multiprocessing.connection import Connection

from candor.scheduler.runner import run_runner

# glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
    """Let glibc reuse freed blocks of a few MiB instead of mapping fresh pages for each.

    Every request gets its own llama.cpp sampler chain, whose candidate array is n_vocab entries (3 MiB
    on Gemma's 262k vocabulary); glibc maps blocks that size afresh each time, and the new pages fault in
    during the request's first step: 8 requests starting together spent 9 ms sampling their first tokens
    instead of 2.5, and the step's decode 132 ms instead of 123. A runner is a process of its own, so the
    heap it keeps (tens of MiB) is its own.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(M_MMAP_THRESHOLD, 64 << 20)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


def main(argv: list[str]) -> int:
    """Read the RunnerConfig from the socket, then run."""
    keep_freed_memory()
    conn = Connection(int(argv[0]))
    try:
        config = conn.recv()
    except EOFError:
        return 1
    run_runner(config, conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
