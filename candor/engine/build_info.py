"""What llama.cpp build is running: versions, commit, backends, devices, CPU features."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import llama_cpp
from llama_cpp import _ggml

from candor.engine.native import ensure_backend


@dataclass(frozen=True)
class BuildInfo:
    """The engine candor runs on, as llama.cpp itself reports it."""

    llama_cpp_python: str
    ggml_version: str
    llama_cpp_commit: str
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    gpu_offload: bool
    system_info: str

    @property
    def cpu_features(self) -> tuple[str, ...]:
        """The CPU features llama.cpp was built with and detected (`AVX2`, `NEON`...)."""
        features = []
        for part in self.system_info.split("|"):
            name, _, value = part.partition("=")
            if value.strip() == "1":
                features.append(name.split(":")[-1].strip())
        return tuple(features)


def _text_function(name: str, argtypes: list[type] | None = None) -> Any:
    func = getattr(_ggml.libggml, name)
    func.restype = ctypes.c_char_p
    if argtypes is not None:
        func.argtypes = argtypes
    return func


def build_info() -> BuildInfo:
    """Ask the loaded llama.cpp/ggml libraries what they are."""
    ensure_backend()
    lib = _ggml.libggml
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    reg_name = _text_function("ggml_backend_reg_name", [ctypes.c_void_p])
    dev_name = _text_function("ggml_backend_dev_name", [ctypes.c_void_p])
    dev_description = _text_function("ggml_backend_dev_description", [ctypes.c_void_p])
    backends = tuple(
        reg_name(lib.ggml_backend_reg_get(i)).decode() for i in range(lib.ggml_backend_reg_count())
    )
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        devices.append(f"{dev_name(dev).decode()} ({dev_description(dev).decode()})")
    return BuildInfo(
        llama_cpp_python=llama_cpp.__version__,
        ggml_version=_text_function("ggml_version")().decode(),
        llama_cpp_commit=_text_function("ggml_commit")().decode(),
        backends=backends,
        devices=tuple(devices),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        system_info=llama_cpp.llama_print_system_info().decode().strip(),
    )


def extra_buffer_types() -> list[tuple[str, int]]:
    """The CPU backend's extra buffer types for weights (AMX, KLEIDIAI, CPU_REPACK...), in llama.cpp's order
    of preference, each as (name, ggml_backend_buffer_type_t)."""
    ensure_backend()
    lib = _ggml.libggml
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    buft_name = _text_function("ggml_backend_buft_name", [ctypes.c_void_p])
    cpu = lib.ggml_backend_dev_by_type(_CPU_DEVICE)
    if not cpu:
        return []
    address = lib.ggml_backend_reg_get_proc_address(
        lib.ggml_backend_dev_backend_reg(cpu), b"ggml_backend_dev_get_extra_bufts"
    )
    if not address:
        return []
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    found: list[tuple[str, int]] = []
    listed = get_extra(cpu)
    while listed and listed[len(found)]:
        buft = int(listed[len(found)])
        found.append((buft_name(buft).decode(), buft))
    return found


# ggml_backend_dev_type: 0 CPU, 1 GPU (dedicated memory), 2 IGPU (host memory), 3 ACCEL
_CPU_DEVICE = 0


@dataclass(frozen=True)
class GpuMemory:
    """One GPU with memory of its own, as its ggml backend reports it."""

    name: str
    free: int  # bytes
    total: int


_GPU_WITH_OWN_MEMORY = 1


def gpu_memory() -> tuple[GpuMemory, ...]:
    """Free and total memory of each dedicated-memory GPU llama.cpp can use; empty on a CPU build.

    Asking a CUDA device creates a driver context in the calling process, so a runner process asks,
    never the scheduler.
    """
    ensure_backend()
    lib = _ggml.libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    dev_name = _text_function("ggml_backend_dev_name", [ctypes.c_void_p])
    gpus = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) != _GPU_WITH_OWN_MEMORY:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        gpus.append(GpuMemory(dev_name(dev).decode(), int(free.value), int(total.value)))
    return tuple(gpus)
