"""What this machine and llama.cpp build are, as `candor doctor`, `candor plan` and `candor bench` report it.

The CLI reads the engine's build and CPU facts through here, never from candor.engine itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from candor.config import Settings
from candor.engine.cpu_build import advertises_amx, amx_free_build_command
from candor.engine.cpu_build import cpu_name as engine_cpu_name
from candor.engine.cpu_selftest import CpuBuffers, choose_cpu_buffers

if TYPE_CHECKING:
    from candor.engine.build_info import BuildInfo as BuildInfo

__all__ = [
    "CpuBuffers",
    "amx_free_build",
    "build_info",
    "candor_build",
    "cpu_buffers",
    "cpu_name",
]


def build_info() -> BuildInfo:
    """The llama.cpp build candor runs on: versions, backends, devices, CPU features (loads llama.cpp)."""
    # Imported here: the commands that import this module for their --help must not load llama.cpp.
    from candor.engine.build_info import build_info as engine_build_info

    return engine_build_info()


def cpu_buffers(settings: Settings, *, threads: int = 2) -> CpuBuffers:
    """Whether models load with llama.cpp's extra CPU buffer types: CANDOR_CPU_BUFFERS, and for `auto`
    this machine's CPU self-test (run once per CANDOR_HOME, then cached)."""
    return choose_cpu_buffers(settings.cpu_buffers, settings.home, threads=threads)


def cpu_name() -> str:
    """The CPU's model name, as the OS reports it."""
    return engine_cpu_name()


def amx_free_build(buffers: CpuBuffers) -> str | None:
    """The command that builds llama.cpp without AMX, when this CPU advertises AMX and the self-test
    found its AMX kernels crash (a native build compiled kernels the machine cannot run); else None."""
    verdict = buffers.verdict
    if advertises_amx() and verdict is not None and "AMX" in verdict.faulty:
        return amx_free_build_command()
    return None


def candor_build() -> str:
    """Which llama.cpp candor runs on, in the terms `candor bench` uses for llama.cpp's own tools."""
    info = build_info()
    amx = "with AMX kernels" if "AMX_INT8" in info.cpu_features else "without AMX"
    return f"candor on llama-cpp-python {info.llama_cpp_python} (llama.cpp {info.llama_cpp_commit}; {amx})"
