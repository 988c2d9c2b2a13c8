"""Ask the installed llama.cpp whether it can load a model, in a child process that may crash safely.

A malformed or Ollama-rewritten file can make llama.cpp abort (GGML_ASSERT) instead of returning an
error; run in a child, that abort becomes an answer instead of the end of the caller.

    python -m candor.engine.probe_child MODEL.gguf    exit 0: loads; 3: refused (reason on stderr)
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REFUSED = 3  # the child's exit status when llama.cpp returned an error (not a crash)


@dataclass(frozen=True)
class ProbeResult:
    """Whether llama.cpp loaded the file, and if not, why."""

    ok: bool
    reason: str = ""


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line.lower() or "assert" in line.lower()] or lines
    return "; ".join(useful[-n:])


def probe_load(path: Path, *, timeout: float = 120.0) -> ProbeResult:
    """Load the model's weights (memory-mapped, no context) in a child process and report the outcome."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "candor.engine.probe_child", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"llama.cpp did not finish loading within {timeout:.0f} s")
    if done.returncode == 0:
        return ProbeResult(True)
    if done.returncode == REFUSED:
        return ProbeResult(False, done.stderr.strip() or "llama.cpp refused the file")
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        detail = _last_lines(done.stderr)
        return ProbeResult(
            False, f"llama.cpp crashed while loading it ({name})" + (f": {detail}" if detail else "")
        )
    return ProbeResult(False, _last_lines(done.stderr) or f"the loader exited with status {done.returncode}")
