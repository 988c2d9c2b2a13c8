"""Messages between the scheduler (parent) and a model's runner process, and how errors cross over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from candor import errors
from candor.errors import CandorError, EngineError
from candor.pipeline.request import Infill
from candor.types import SamplingParams, ThinkingBudget


@dataclass(frozen=True)
class Generate:
    """Start a generation. `text` is tokenized in the runner; `tokens` are used as they are."""

    id: int
    params: SamplingParams
    text: str | None = None
    tokens: tuple[int, ...] | None = None
    parse_special: bool = False  # chat-template output carries control tokens as text
    extra_stop: tuple[str, ...] = ()
    infill: Infill | None = None  # `text` then follows the model's fill-in-the-middle marker
    thinking_budget: ThinkingBudget | None = None


@dataclass(frozen=True)
class Cancel:
    """Stop a generation and free its slot."""

    id: int


@dataclass(frozen=True)
class Embed:
    """Embed texts."""

    id: int
    texts: tuple[str, ...]


@dataclass(frozen=True)
class Embedded:
    """The answer to Embed: one vector per text, and the tokens read to make them."""

    vectors: list[list[float]]
    tokens: int


@dataclass(frozen=True)
class Rerank:
    """Score documents against a query (a reranker model's relevance scores)."""

    id: int
    query: str
    documents: tuple[str, ...]


@dataclass(frozen=True)
class Reranked:
    """The answer to Rerank: one score per document, in the documents' order, and the tokens read."""

    scores: list[float]
    tokens: int


@dataclass(frozen=True)
class Tokenize:
    """Tokenize text (answered with Result)."""

    id: int
    text: str
    add_special: bool = True
    parse_special: bool = False
    as_prompt: bool = False  # tokenize as a Generate's rendered chat prompt is (control tokens, one BOS)


@dataclass(frozen=True)
class Detokenize:
    """Token ids -> text, or each token's bytes with `pieces` (answered with Result)."""

    id: int
    tokens: tuple[int, ...]
    pieces: bool = False


@dataclass(frozen=True)
class Shutdown:
    """Free everything and exit."""


@dataclass(frozen=True)
class Ready:
    """The runner loaded its model; what the parent needs to know about it."""

    n_ctx: int
    max_request_tokens: int
    parallel: int
    bos_text: str
    eos_text: str
    load_seconds: float
    gpu_layers: int = 0  # as llama.cpp took it (-1: all)
    placement: str = ""  # who decided the GPU layers, and why
    host_bytes: int | None = None  # the memory plan's bytes in RAM (None: no plan)
    gpu_bytes: int = 0  # and on the GPU
    weights: str = ""  # how the weights are held (read into memory or mapped from the file), and why
    cpu_buffers: str = ""  # whether llama.cpp's extra CPU buffer types (AMX, CPU_REPACK) hold weights; why


@dataclass(frozen=True)
class Result:
    """A one-shot answer (embeddings, scores, tokens) to the request with this id."""

    id: int
    value: Any


@dataclass(frozen=True)
class Events:
    """One step's output: (request id, chunk or None, error or None) for each request that moved."""

    items: tuple[tuple[int, Any, tuple[str, str] | None], ...]


def pack_error(error: BaseException) -> tuple[str, str]:
    """An exception as (class name, message), so it crosses the process boundary safely."""
    return type(error).__name__, str(error)


def unpack_error(packed: tuple[str, str]) -> CandorError:
    """Rebuild a candor error from pack_error's tuple (unknown kinds become EngineError)."""
    name, message = packed
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, CandorError):
        return kind(message)
    return EngineError(f"{name}: {message}")


@dataclass(frozen=True)
class RunnerConfig:
    """How a runner loads its model."""

    path: str
    ctx: int  # tokens one request may use
    parallel: int  # sequences decoded together
    threads: int
    batch: int
    gpu_layers: int  # -1: as many as fit (decided by the runner from the memory plan), else exactly this
    kv_type: str = "f16"
    load_mode: str = "auto"  # CANDOR_LOAD_MODE: ram, mmap, or auto (the runner decides)
    cpu_buffers: str = "auto"  # CANDOR_CPU_BUFFERS: all, none, or auto (as the CPU self-test found)
    home: str = ""  # CANDOR_HOME, where the CPU self-test's verdict is kept ("": from the environment)
