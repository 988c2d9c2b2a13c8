"""What the installed llama.cpp build can run: its ggml tensor types."""

from __future__ import annotations

import ctypes
import functools

from llama_cpp import _ggml


@functools.cache
def _type_functions() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]:  # type: ignore[name-defined]
    lib = _ggml.libggml
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
