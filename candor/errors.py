"""Typed errors. Each message names the problem and the fix; the CLI and server translate them."""

from __future__ import annotations


class CandorError(Exception):
    """Base of every error candor raises on purpose."""


class NotFound(CandorError):
    """Something a request names is not there (a stored response, a model)."""


class ModelNotFound(NotFound):
    """No model by that name or path."""


class ModelLoadError(CandorError):
    """llama.cpp could not load a model file."""


class InvalidModelFile(ModelLoadError):
    """The file is not a well-formed GGUF model."""


class UnsupportedModel(ModelLoadError):
    """The file is a GGUF, but this llama.cpp build cannot run it."""


class InvalidParameter(CandorError, ValueError):
    """A sampling or model setting is out of range or of the wrong type."""


class ContextOverflow(CandorError):
    """The prompt (plus what must be generated) does not fit the context window."""


class TemplateError(CandorError):
    """A chat template failed to render or tried to leave its sandbox."""


class EngineError(CandorError):
    """llama.cpp reported a failure while running a model."""


class ModelClosed(CandorError):
    """The model was closed and its native memory freed."""


class DownloadError(CandorError):
    """A download failed (network, server, disk); what was fetched so far is kept for resuming."""


class IntegrityError(CandorError):
    """A file's content does not match the hash it was published with."""


class Busy(CandorError):
    """The request queue is full; retry later (the server answers 503)."""


class RunnerCrashed(EngineError):
    """The process running a model died; the model reloads on the next request."""
