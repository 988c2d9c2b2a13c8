"""Ask the installed llama.cpp whether it can load a model, in a child process that may crash safely.

A malformed or Ollama-rewritten file can make llama.cpp abort (GGML_ASSERT) instead of returning an
error; run in a child, that abort becomes an answer instead of the end of the caller. `probe_load`
starts a child per file; `ProbeSession` keeps one child for many files (a crash costs a restart).

    python -m candor.engine.probe_child MODEL.gguf    exit 0: loads; 3: refused (reason on stderr)
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from candor.config import Settings
from candor.engine.cpu_selftest import crash_hint
from candor.errors import ModelLoadError

REFUSED = 3  # the child's exit status when llama.cpp returned an error (not a crash)
_CHILD = (sys.executable, "-m", "candor.engine.probe_child")
_EXIT_WAIT = 10.0  # seconds a child that closed its output gets to finish dying


def _child_env() -> dict[str, str]:
    # An abort's message is what we report; ggml's gdb backtrace would only add seconds per crash.
    return {**os.environ, "GGML_NO_BACKTRACE": "1"}


@dataclass(frozen=True)
class ProbeResult:
    """Whether llama.cpp loaded the file, and if not, why."""

    ok: bool
    reason: str = ""
    crashed: bool = False  # llama.cpp died (a signal such as SIGABRT or SIGSEGV) instead of refusing
    timed_out: bool = False  # the child was killed for taking too long
    cpu: bool = False  # the crash points at the CPU (see cpu_selftest.crash_hint), not at the file

    def error(self, path: Path) -> ModelLoadError:
        """The typed error for a file that failed the probe."""
        if self.cpu:
            return ModelLoadError(f"llama.cpp cannot load {path} on this machine: {self.reason}")
        return ModelLoadError(
            f"llama.cpp cannot load {path}: {self.reason}; download the model again, or another "
            "quantization of it"
        )


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line.lower() or "assert" in line.lower()] or lines
    return "; ".join(useful[-n:])


def _flags(max_memory: int | None, decode: bool) -> list[str]:
    return [*(["--max-memory", str(max_memory)] if max_memory else []), *(["--decode"] if decode else [])]


def _died(returncode: int, stderr: str) -> ProbeResult:
    """The result for a child that ended without answering."""
    detail = _last_lines(stderr)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = crash_hint(name, Settings.from_env().home)
        if hint:
            return ProbeResult(False, f"llama.cpp crashed on it ({name}). {hint}", crashed=True, cpu=True)
        return ProbeResult(
            False,
            f"llama.cpp crashed on it ({name})" + (f": {detail}" if detail else ""),
            crashed=True,
        )
    return ProbeResult(False, detail or f"the loader exited with status {returncode}")


def probe_load(
    path: Path, *, timeout: float = 120.0, max_memory: int | None = None, decode: bool = False
) -> ProbeResult:
    """Load the model's weights (memory-mapped, no context) in a child process and report the outcome.

    Args:
        path: the .gguf file.
        timeout: seconds before the child is killed and the file reported as hanging.
        max_memory: an address-space cap for the child, in bytes (None: no cap).
        decode: also create a small context and decode a prompt and two tokens.
    Returns:
        ok, or the reason llama.cpp gave, or how it crashed.
    """
    try:
        done = subprocess.run(
            [*_CHILD, *_flags(max_memory, decode), str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"llama.cpp did not finish loading within {timeout:.0f} s", timed_out=True)
    if done.returncode == 0:
        return ProbeResult(True)
    if done.returncode == REFUSED:
        return ProbeResult(False, done.stderr.strip() or "llama.cpp refused the file")
    return _died(done.returncode, done.stderr)


class ProbeSession:
    """One probe child answering for many files; restarted after a crash, a timeout, or `recycle` files."""

    def __init__(
        self,
        *,
        timeout: float = 120.0,
        max_memory: int | None = None,
        decode: bool = False,
        recycle: int = 200,
    ) -> None:
        self.timeout, self.recycle = timeout, recycle
        self._command = [*_CHILD, "--serve", *_flags(max_memory, decode)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._served = 0
        self.started = 0  # children started: 1 plus one per crash, timeout or recycling

    def _start(self) -> subprocess.Popen[bytes]:
        # stderr goes to a file: llama.cpp can write more than a pipe holds while no one reads it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # lives as long as the child; closed in _stderr_text
        self._proc = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_child_env(),
        )
        self._served = 0
        self.started += 1
        return self._proc

    def _stop(self, grace: float = 0.0) -> int:
        """End the child (killing it if it still runs after `grace` seconds) and return its exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        try:
            status = proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        return status

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read()[-20_000:].decode("utf-8", errors="replace")
        self._stderr.close()
        self._stderr = None
        return text

    def _read_line(self, proc: subprocess.Popen[bytes]) -> bytes | None:
        """The child's next answer; b"" when its output ended (it died), None past the timeout."""
        assert proc.stdout is not None
        fd, data = proc.stdout.fileno(), b""
        deadline = time.monotonic() + self.timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            data += chunk
        return data

    def probe(self, path: Path) -> ProbeResult:
        """Load one file in the session's child and report the outcome (as probe_load does)."""
        if "\n" in str(path):  # the session's protocol is a path per line
            return probe_load(path, timeout=self.timeout)
        proc = self._proc if self._proc is not None and self._served < self.recycle else None
        if proc is None:
            self._stop()
            proc = self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(os.fsencode(path) + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died; read_line sees the end of its output
        line = self._read_line(proc)
        self._served += 1
        if line:
            answer = json.loads(line)
            return ProbeResult(bool(answer["ok"]), str(answer["reason"]))
        status = self._stop(grace=_EXIT_WAIT if line is not None else 0.0)
        stderr = self._stderr_text()
        if line is None:
            return ProbeResult(
                False, f"llama.cpp did not finish loading within {self.timeout:.0f} s", timed_out=True
            )
        return _died(status, stderr)

    def close(self) -> None:
        """End the child."""
        self._stop()
        self._stderr_text()

    def __enter__(self) -> ProbeSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
