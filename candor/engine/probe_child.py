"""The child side of probe_load: load a model's weights and say whether llama.cpp accepted them.

Kept apart from probe.py so that `python -m` runs a module the package itself never imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

from candor.engine.model import NativeModel
from candor.engine.probe import REFUSED
from candor.errors import CandorError


def main(argv: list[str]) -> int:
    """Load argv[0]; exit 0 when llama.cpp loads it, REFUSED with the reason on stderr when it refuses."""
    try:
        NativeModel(Path(argv[0]), gpu_layers=0).close()
    except CandorError as exc:
        print(exc, file=sys.stderr)
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
