"""This CPU's features, and the llama.cpp build that suits it when a native build's AMX kernels crash it."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# /proc/cpuinfo flag -> ggml's CMake option (ggml/CMakeLists.txt), in that file's order
GGML_X86_OPTIONS = (
    ("sse4_2", "GGML_SSE42"),
    ("avx", "GGML_AVX"),
    ("avx_vnni", "GGML_AVX_VNNI"),
    ("avx2", "GGML_AVX2"),
    ("bmi2", "GGML_BMI2"),
    ("avx512f", "GGML_AVX512"),
    ("avx512vbmi", "GGML_AVX512_VBMI"),
    ("avx512_vnni", "GGML_AVX512_VNNI"),
    ("avx512_bf16", "GGML_AVX512_BF16"),
    ("fma", "GGML_FMA"),
    ("f16c", "GGML_F16C"),
)


def cpuinfo_first_processor() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel lists them (x86 `flags`, ARM `features`)."""
    info = cpuinfo_first_processor()
    return frozenset((info.get("flags") or info.get("features") or "").split())


def cpu_name() -> str:
    """The CPU's model name."""
    info = cpuinfo_first_processor()
    return info.get("model name") or info.get("cpu model") or platform.processor() or platform.machine()


def advertises_amx(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU says it has AMX tiles (what makes a native llama.cpp build compile AMX kernels)."""
    return "amx_tile" in (cpu_flags() if flags is None else flags)


def amx_free_build_command(flags: frozenset[str] | None = None) -> str:
    """The pip command that rebuilds llama-cpp-python for this CPU's vector units, without AMX.

    GGML_NATIVE=OFF stops llama.cpp from compiling every feature the build machine has (AMX included);
    the options switch this CPU's other features back on. --no-cache-dir makes pip compile instead of
    reusing its cached native wheel. Further CMake options (such as -DGGML_RPC=ON) go inside the quotes.
    """
    flags = cpu_flags() if flags is None else flags
    options = ["-DGGML_NATIVE=OFF", *(f"-D{option}=ON" for flag, option in GGML_X86_OPTIONS if flag in flags)]
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    pin = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    return f'CMAKE_ARGS="{" ".join(options)}" pip install --no-cache-dir --force-reinstall --no-deps {pin}'
