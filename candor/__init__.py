"""candor: run GGUF models locally on upstream llama.cpp, honest about what each model is.

import candor
with candor.load() as model:                 # the embedded default model
    for chunk in model.generate("Once upon a time", max_tokens=40):
        print(chunk.text, end="", flush=True)
"""

__version__ = "0.1.0"

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
from candor.manage import (
    copy_model,
    import_model,
    import_ollama,
    licenses,
    list_models,
    pull,
    remove_model,
)
from candor.model import Model, load
from candor.types import Chunk, Completion, FinishReason, Message, SamplingParams, Timings, Usage

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
    "import_model",
    "import_ollama",
    "licenses",
    "list_models",
    "load",
    "pull",
    "remove_model",
]
