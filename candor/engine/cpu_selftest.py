"""The CPU self-test: does this llama.cpp build's every extra CPU buffer type (AMX, CPU_REPACK...) run on
this machine, or does one of them kill the process?

Some virtual machines on recent Xeons advertise AMX, and grant the tile permission, but do not keep the tile
state usable: llama.cpp's AMX kernels die by SIGILL or SIGSEGV on the first prompt batch. No flag tells
that apart from a working CPU, so candor asks: a child process runs a tiny model through every extra
buffer type (cpu_selftest_child.py) and reports which one died. The verdict is remembered under
CANDOR_HOME, keyed by the llama.cpp build, the CPU, the kernel and the boot (the fault comes from the
virtual machine, so a new boot tests again), and decides how every model is loaded (CANDOR_CPU_BUFFERS).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from candor.engine.cpu_build import cpu_flags, cpu_name
from candor.jsonfile import read_json, write_json

logger = logging.getLogger(__name__)

_CHILD = (sys.executable, "-m", "candor.engine.cpu_selftest_child")
CHILD_TIMEOUT = 120.0  # seconds for the whole search: each trial takes ~20 ms, the interpreter ~0.3 s
KEEP_VERDICTS = 8  # builds and boots remembered at once (several environments may share a home)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Verdict:
    """What the self-test found on this machine with this llama.cpp build."""

    extra_buffer_types: tuple[str, ...]  # what the build has, in llama.cpp's order of preference
    faulty: dict[str, str] = field(default_factory=dict)  # buffer type ("all": not one alone) -> how it died
    untested: tuple[str, ...] = ()  # types that could not be run alone
    fallback_ok: bool | None = None  # whether loading with no extra buffer type passed (None: not needed)
    tested_at: float = 0.0  # time.time() of the test
    seconds: float = 0.0  # how long it took
    error: str = ""  # the self-test itself could not run (nothing is remembered then)
    trials: tuple[dict[str, Any], ...] = ()

    @property
    def passed(self) -> bool:
        """Every extra buffer type ran (or the build has none)."""
        return not self.faulty and not self.error

    def summary(self) -> str:
        """One line for doctor, /api/ps and error messages."""
        if self.error:
            return f"the CPU self-test could not run ({self.error})"
        if not self.extra_buffer_types:
            return "this llama.cpp build has no extra CPU buffer types"
        if self.passed:
            return f"the CPU self-test passed with {', '.join(self.extra_buffer_types)}"
        names = [n for n in self.faulty if n != "all"]
        how = "; ".join(f"{n}: {h}" if len(self.faulty) > 1 else h for n, h in self.faulty.items())
        verb = "crashes" if len(names) == 1 else "crash"
        names = names or ["its extra buffer types together"]
        fallback = "" if self.fallback_ok is not False else "; loading without them failed too"
        return f"the CPU self-test found that {' and '.join(names)} {verb} this machine ({how}){fallback}"

    def to_json(self) -> dict[str, Any]:
        """The verdict as stored."""
        return {
            "extra_buffer_types": list(self.extra_buffer_types),
            "faulty": self.faulty,
            "untested": list(self.untested),
            "fallback_ok": self.fallback_ok,
            "tested_at": self.tested_at,
            "seconds": self.seconds,
            "trials": list(self.trials),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        """Read a stored verdict (raises KeyError or TypeError on a malformed one)."""
        return cls(
            extra_buffer_types=tuple(str(t) for t in data["extra_buffer_types"]),
            faulty={str(k): str(v) for k, v in dict(data["faulty"]).items()},
            untested=tuple(str(t) for t in data.get("untested", ())),
            fallback_ok=data.get("fallback_ok"),
            tested_at=float(data.get("tested_at", 0.0)),
            seconds=float(data.get("seconds", 0.0)),
            trials=tuple(data.get("trials", ())),
            error=str(data.get("error", "")),
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_identity() -> str:
    """The CPU's model and feature flags."""
    return f"{cpu_name()}\n{' '.join(sorted(cpu_flags()))}"


def _build_identity() -> str:
    """The installed llama.cpp: llama-cpp-python's version and its shared libraries' sizes and times, which
    a rebuild with other CMAKE_ARGS changes (without loading them)."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    spec = importlib.util.find_spec("llama_cpp")
    libs: list[str] = []
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "lib"
        for lib in sorted(folder.glob("*")) if folder.is_dir() else ():
            if lib.is_file() and not lib.is_symlink():
                info = lib.stat()
                libs.append(f"{lib.name}:{info.st_size}:{info.st_mtime_ns}")
    return f"llama-cpp-python {version} " + hashlib.sha256("\n".join(libs).encode()).hexdigest()[:16]


def machine_key() -> dict[str, str]:
    """What a verdict holds for: the llama.cpp build, the CPU, the kernel and this boot."""
    uname = os.uname()
    return {
        "llama_cpp": _build_identity(),
        "cpu": hashlib.sha256(_cpu_identity().encode()).hexdigest()[:16],
        "kernel": f"{uname.release} {uname.version}",
        "boot_id": _read(BOOT_ID).strip(),
    }


def _cache_path(home: Path) -> Path:
    return home / "cache" / "cpu-selftest.json"


def remembered(home: Path, key: dict[str, str] | None = None) -> Verdict | None:
    """The verdict stored for this build, CPU, kernel and boot, if the self-test has run."""
    key = key or machine_key()
    for entry in read_json(_cache_path(home)).get("verdicts", []):
        if isinstance(entry, dict) and entry.get("key") == key:
            try:
                return Verdict.from_json(entry["verdict"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _run_child(threads: int) -> Verdict:
    """Run the search in a child process (twice if the child itself fails)."""
    started, failure = time.time(), ""
    for _ in range(2):
        try:
            done = subprocess.run(
                [*_CHILD, "--threads", str(threads)],
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
                env={**os.environ, "GGML_NO_BACKTRACE": "1"},
            )
        except subprocess.TimeoutExpired:
            failure = f"no answer within {CHILD_TIMEOUT:.0f} s"
            continue
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            try:
                report = json.loads(lines[-1])
                return Verdict.from_json({**report, "tested_at": started, "seconds": time.time() - started})
            except (ValueError, KeyError, TypeError) as exc:
                failure = f"unreadable report: {exc}"
                continue
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
        failure = f"exit status {done.returncode}" + (f": {tail[0]}" if tail else "")
    return Verdict(extra_buffer_types=(), tested_at=started, seconds=time.time() - started, error=failure)


def cpu_verdict(home: Path, *, threads: int = 2) -> Verdict:
    """This machine's verdict: remembered, or found now (once per build, CPU, kernel and boot).

    The test runs under a lock, so processes that load models at the same time wait for one test; the
    verdict is written whole (renamed into place), keeping the other entries. A self-test that cannot run
    is reported, not remembered.
    """
    key = machine_key()
    found = remembered(home, key)
    if found is not None:
        return found
    path = _cache_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        found = remembered(home, key)  # another process may have tested while this one waited
        if found is not None:
            return found
        verdict = _run_child(threads)
        if verdict.error:
            logger.warning("%s", verdict.summary())
            return verdict
        if not verdict.passed:  # once per boot: from now on models load without them, silently
            logger.warning(
                "%s; models load without llama.cpp's extra CPU buffer types (CANDOR_CPU_BUFFERS; "
                "`candor doctor` says more)",
                verdict.summary(),
            )
        entries = [
            e for e in read_json(path).get("verdicts", []) if isinstance(e, dict) and e.get("key") != key
        ]
        entries = [*entries[-(KEEP_VERDICTS - 1) :], {"key": key, "verdict": verdict.to_json()}]
        try:
            write_json(path, {"verdicts": entries})
        except OSError as exc:
            logger.warning("cannot remember the CPU self-test's verdict in %s: %s", path, exc)
        return verdict


@dataclass(frozen=True)
class CpuBuffers:
    """Whether models load with llama.cpp's extra CPU buffer types, and why."""

    extra: bool
    why: str
    verdict: Verdict | None = None


def choose_cpu_buffers(mode: str, home: Path, *, threads: int = 2) -> CpuBuffers:
    """Decide for CANDOR_CPU_BUFFERS=`mode`: all, none, or auto (as this machine's self-test says)."""
    if mode == "all":
        return CpuBuffers(True, "every extra CPU buffer type (CANDOR_CPU_BUFFERS=all)")
    if mode == "none":
        return CpuBuffers(False, "no extra CPU buffer types (CANDOR_CPU_BUFFERS=none)")
    verdict = cpu_verdict(home, threads=threads)
    if verdict.error:
        return CpuBuffers(True, f"every extra CPU buffer type, untested: {verdict.summary()}", verdict)
    if verdict.passed:
        return CpuBuffers(True, f"every extra CPU buffer type: {verdict.summary()}", verdict)
    return CpuBuffers(False, f"no extra CPU buffer types: {verdict.summary()}", verdict)


# Signals a CPU fault raises; SIGKILL, SIGTERM (someone stopped it), SIGABRT (an assertion) are not the CPU
CPU_FAULT_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE")


def crash_hint(signal_name: str, home: Path) -> str:
    """What a llama.cpp process killed by `signal_name` tells about the CPU: a sentence pointing at the
    self-test and CANDOR_CPU_BUFFERS for SIGILL, or for a fault where the self-test failed; else ""."""
    if signal_name not in CPU_FAULT_SIGNALS:
        return ""
    verdict = remembered(home)
    if verdict is not None and not verdict.passed and not verdict.error:
        cause = verdict.summary()
    elif signal_name == "SIGILL":
        cause = "an illegal instruction: this llama.cpp build uses a CPU feature this machine does not run"
    else:
        return ""
    return (
        f"{signal_name} points at the CPU rather than the model file ({cause}). Run `candor doctor` for the "
        "CPU self-test and a llama.cpp build for this CPU; CANDOR_CPU_BUFFERS=none loads without llama.cpp's "
        "extra CPU buffer types"
    )
