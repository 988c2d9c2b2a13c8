"""Entry point of a runner process: `python -m candor.scheduler.runner_child FD`.

A plain subprocess with an inherited socket, not multiprocessing's spawn, so that a library user's
script is never re-imported in the child.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from candor.scheduler.runner import run_runner


def main(argv: list[str]) -> int:
    """Read the RunnerConfig from the socket, then run."""
    conn = Connection(int(argv[0]))
    try:
        config = conn.recv()
    except EOFError:
        return 1
    run_runner(config, conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
