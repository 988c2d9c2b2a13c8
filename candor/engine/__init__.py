"""The only package that imports llama_cpp: models, contexts, sampling and the generation loop."""

from candor.engine.build_info import BuildInfo, build_info
from candor.engine.context import ContextConfig, NativeContext
from candor.engine.embed import Embedder
from candor.engine.generate import SequenceRunner
from candor.engine.model import NativeModel

__all__ = [
    "BuildInfo",
    "ContextConfig",
    "Embedder",
    "NativeContext",
    "NativeModel",
    "SequenceRunner",
    "build_info",
]
