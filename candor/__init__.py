"""candor: run GGUF models locally on upstream llama.cpp, honest about what each model is.

import candor
with candor.load() as model:                 # the embedded default model
    for chunk in model.generate("Once upon a time", max_tokens=40):
        print(chunk.text, end="", flush=True)
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from candor.errors import (
    Busy,
    CandorError,
    ContextOverflow,
    DownloadError,
    EngineError,
    IntegrityError,
    InvalidModelFile,
    InvalidParameter,
    ModelClosed,
    ModelLoadError,
    ModelNotFound,
    RunnerCrashed,
    TemplateError,
    UnsupportedModel,
)
from candor.types import Chunk, Completion, FinishReason, Message, SamplingParams, Timings, Usage

if TYPE_CHECKING:
    from candor.model import Model, load
    from candor.store.library import (
        copy_model,
        describe_model,
        import_model,
        import_ollama,
        licenses,
        list_models,
        pull,
        remove_model,
    )

# Loaded on first use: importing candor (for its errors, types or version) must not load llama.cpp or the
# Hugging Face client, which `candor --version`, `candor ps` and the server's parent process never need.
_LAZY = {
    "Model": "candor.model",
    "load": "candor.model",
    "copy_model": "candor.store.library",
    "describe_model": "candor.store.library",
    "import_model": "candor.store.library",
    "import_ollama": "candor.store.library",
    "licenses": "candor.store.library",
    "list_models": "candor.store.library",
    "pull": "candor.store.library",
    "remove_model": "candor.store.library",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'candor' has no attribute {name!r}")


__all__ = [
    "Busy",
    "CandorError",
    "Chunk",
    "Completion",
    "ContextOverflow",
    "DownloadError",
    "EngineError",
    "FinishReason",
    "IntegrityError",
    "InvalidModelFile",
    "InvalidParameter",
    "Message",
    "Model",
    "ModelClosed",
    "ModelLoadError",
    "ModelNotFound",
    "RunnerCrashed",
    "SamplingParams",
    "TemplateError",
    "Timings",
    "UnsupportedModel",
    "Usage",
    "__version__",
    "copy_model",
    "describe_model",
    "import_model",
    "import_ollama",
    "licenses",
    "list_models",
    "load",
    "pull",
    "remove_model",
]
