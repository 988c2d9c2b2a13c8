"""What the installed llama.cpp build can run: its ggml tensor types.

Asked of ggml's base library alone, found beside llama-cpp-python without importing it: the server's
own process checks every model file this way and never loads llama.cpp itself (its runners do).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sys
from pathlib import Path

from candor.errors import EngineError

_BASE_NAMES = {"darwin": "libggml-base.dylib", "win32": "ggml-base.dll"}


@functools.cache
def _ggml_base() -> ctypes.CDLL:
    spec = importlib.util.find_spec("llama_cpp")
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    name = _BASE_NAMES.get(sys.platform, "libggml-base.so")
    for folder in folders:
        for candidate in (Path(folder) / "lib" / name, Path(folder) / name):
            if candidate.is_file():
                return ctypes.CDLL(str(candidate))
    raise EngineError(
        f"llama-cpp-python's {name} was not found; reinstall it: "
        "pip install --force-reinstall llama-cpp-python"
    )


@functools.cache
def _type_functions() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]:  # type: ignore[name-defined]
    lib = _ggml_base()
    name = lib.ggml_type_name
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.c_int]
    block = lib.ggml_blck_size
    block.restype, block.argtypes = ctypes.c_int64, [ctypes.c_int]
    return name, block


def ggml_type_supported(type_id: int, expected_name: str) -> bool:
    """True when this ggml build knows tensor type `type_id` under the name candor expects.

    Only call with ids from candor's own table (gguf_file.GGML_TYPES): ggml indexes an array with it.
    """
    name, block = _type_functions()
    found = name(type_id)
    return bool(found) and found.decode().upper() == expected_name.upper() and int(block(type_id)) > 0
