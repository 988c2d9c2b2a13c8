"""The only package that imports llama_cpp: models, contexts, sampling and the generation loop.

Its modules load llama.cpp when they are imported; the package itself does not, so that the CPU
self-test's parent side (cpu_selftest, cpu_build) can be used without it. The build_info function is
imported from its module: the package's attribute of that name is the module, once it is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from candor.engine.build_info import BuildInfo
    from candor.engine.context import ContextConfig, NativeContext
    from candor.engine.embed import Embedder
    from candor.engine.generate import SequenceRunner
    from candor.engine.native_model import NativeModel
    from candor.engine.rerank import Reranker

_LAZY = {
    "BuildInfo": "candor.engine.build_info",
    "ContextConfig": "candor.engine.context",
    "NativeContext": "candor.engine.context",
    "Embedder": "candor.engine.embed",
    "SequenceRunner": "candor.engine.generate",
    "NativeModel": "candor.engine.native_model",
    "Reranker": "candor.engine.rerank",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'candor.engine' has no attribute {name!r}")


__all__ = [
    "BuildInfo",
    "ContextConfig",
    "Embedder",
    "NativeContext",
    "NativeModel",
    "Reranker",
    "SequenceRunner",
]
