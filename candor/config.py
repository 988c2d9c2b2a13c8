"""Every CANDOR_* setting, declared once: name, type, default and what it does.

CLI flags override these; `candor doctor` prints the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candor.errors import InvalidParameter


def physical_cores() -> int:
    """Count the physical cores this process may run on (llama.cpp's default thread count)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    siblings: set[str] = set()
    for cpu in allowed:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            siblings.add(path.read_text().strip())
        except OSError:
            siblings.add(str(cpu))
    return max(1, len(siblings))


@dataclass(frozen=True)
class Setting:
    """One environment setting."""

    env: str
    parse: Callable[[str], Any]
    default: Callable[[], Any]
    description: str


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _int(text: str) -> int:
    return int(text)


LOAD_MODES = ("auto", "ram", "mmap")


def _load_mode(text: str) -> str:
    if text not in LOAD_MODES:
        raise ValueError(f"must be one of {', '.join(LOAD_MODES)}")
    return text


CPU_BUFFER_MODES = ("auto", "all", "none")


def _cpu_buffers(text: str) -> str:
    if text not in CPU_BUFFER_MODES:
        raise ValueError(f"must be one of {', '.join(CPU_BUFFER_MODES)}")
    return text


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CANDOR_HOME",
        Path,
        lambda: Path.home() / ".candor",
        "where candor keeps its store, caches and settings",
    ),
    Setting(
        "CANDOR_CTX", _positive_int, lambda: 4096, "context window in tokens when a request does not set one"
    ),
    Setting(
        "CANDOR_THREADS", _positive_int, physical_cores, "CPU threads for llama.cpp (default: physical cores)"
    ),
    Setting(
        "CANDOR_BATCH",
        _positive_int,
        lambda: 512,
        "prompt tokens evaluated per llama_decode call (llama.cpp's n_batch)",
    ),
    Setting(
        "CANDOR_GPU_LAYERS",
        _int,
        lambda: -1,
        "layers to offload to a GPU backend; -1 = as many as fit in free GPU memory, 0 = none",
    ),
    Setting(
        "CANDOR_LOAD_MODE",
        _load_mode,
        lambda: "auto",
        "how a runner holds a model's weights: ram (read into memory, on huge pages where the system "
        "allows), mmap (mapped from the file, as llama.cpp does by default) or auto (ram when the "
        "model fits in half of the available memory)",
    ),
    Setting(
        "CANDOR_CPU_BUFFERS",
        _cpu_buffers,
        lambda: "auto",
        "llama.cpp's extra CPU buffer types for weights (AMX, CPU_REPACK): all (llama.cpp's default), "
        "none, or auto (all unless a once-per-boot CPU self-test finds one that crashes this machine)",
    ),
    Setting(
        "CANDOR_CPU_SELFTEST_FAULT",
        str,
        lambda: "",
        "for tests: the CPU self-test dies by SIGILL wherever this extra buffer type (e.g. CPU_REPACK) "
        "holds weights, as if its kernels were illegal on this CPU",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings: environment over defaults."""

    home: Path
    ctx: int
    threads: int
    batch: int
    gpu_layers: int
    load_mode: str = "auto"
    cpu_buffers: str = "auto"
    cpu_selftest_fault: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every CANDOR_* variable; a malformed one is an error that names it."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env)
            key = setting.env.removeprefix("CANDOR_").lower()
            if raw is None or raw == "":
                values[key] = setting.default()
                continue
            try:
                values[key] = setting.parse(raw)
            except ValueError as exc:
                raise InvalidParameter(
                    f"{setting.env}={raw!r} is invalid ({exc}); {setting.description}"
                ) from None
        return cls(**values)

    @property
    def cache_dir(self) -> Path:
        """Derived data that can be rebuilt (hash caches, the assembled default model)."""
        return self.home / "cache"


def describe() -> list[tuple[str, str, str]]:
    """Return (variable, current value, description) for every setting."""
    current = Settings.from_env()
    rows = []
    for setting in SETTINGS:
        key = setting.env.removeprefix("CANDOR_").lower()
        rows.append((setting.env, str(getattr(current, key)), setting.description))
    return rows
