"""Plain data that flows between the engine, the library API and its callers (no wire formats)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

from candor.errors import InvalidParameter
from candor.grammar_limits import check_grammar, check_schema


class FinishReason(str, Enum):
    """Why a generation ended."""

    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens reached or the context is full


@dataclass(frozen=True)
class ToolCallRequest:
    """A function call an assistant message made (arguments already parsed)."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Message:
    """One chat turn. Assistant turns may carry tool calls; tool turns name the tool they answer."""

    role: str
    content: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    name: str | None = None  # for role "tool": which tool produced this content
    images: tuple[bytes, ...] = ()  # image files (PNG, JPEG...) the turn shows, for models that see

    @classmethod
    def coerce(cls, value: Message | Mapping[str, Any]) -> Message:
        """Accept a Message or an OpenAI/Ollama-style dict with `role` and `content`."""
        if isinstance(value, Message):
            return value
        if not isinstance(value, Mapping) or not isinstance(value.get("role"), str):
            raise InvalidParameter(f"a chat message needs a 'role' string and 'content'; got {value!r}")
        content = value.get("content") or ""
        if not isinstance(content, str):
            raise InvalidParameter(f"message content must be a string; got {type(content).__name__}")
        calls = tuple(_tool_call(c) for c in value.get("tool_calls") or ())
        name = value.get("tool_name") or value.get("name")
        return cls(
            role=value["role"],
            content=content,
            tool_calls=calls,
            name=name if isinstance(name, str) else None,
            images=tuple(image_bytes(i) for i in value.get("images") or ()),
        )


def image_bytes(value: Any) -> bytes:
    """An image as bytes: given so, or as base64 text (Ollama's `images`, a data: URL's payload)."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise InvalidParameter(f"an image must be base64 text; got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter("an image is not valid base64; send the file's bytes base64-encoded") from None


def _tool_call(raw: Any) -> ToolCallRequest:
    """OpenAI's {"id", "function": {"name", "arguments": "<json>"}} or Ollama's {"function": {..., {}}}."""
    function = raw.get("function", raw) if isinstance(raw, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InvalidParameter(f"a tool call needs a function name; got {raw!r}")
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise InvalidParameter(f"tool call arguments are not JSON: {arguments[:80]!r}") from None
    if not isinstance(arguments, Mapping):
        raise InvalidParameter("tool call arguments must be a JSON object")
    ident = raw.get("id") if isinstance(raw, Mapping) else None
    return ToolCallRequest(function["name"], dict(arguments), ident if isinstance(ident, str) else None)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidParameter(f"{name} must be a number between {low} and {high}; got {value!r}")
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be between {low} and {high}; got {value}")


MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen. Defaults follow llama.cpp's (llama-cli / llama-server)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # None: a fresh random seed per request
    stop: tuple[str, ...] = ()
    # None: until end of generation or the context is full; -1 (Ollama's num_predict -1, and -2) says so
    # where None would keep a default limit (`with_overrides` ignores None)
    max_tokens: int | None = None
    ignore_eos: bool = False  # keep decoding past end-of-generation (benchmarks)
    grammar: str | None = None  # GBNF that constrains decoding (structured output)
    # A JSON schema the reply must match: checked here, turned into GBNF where llama.cpp runs
    json_schema: Mapping[str, Any] | None = None
    # None: no log-probabilities; 0: each sampled token's own; N (1..20): also the N most likely tokens
    logprobs: int | None = None

    def __post_init__(self) -> None:
        _check_range("temperature", self.temperature, 0.0, 100.0)
        _check_range("top_k", self.top_k, 0, 1 << 30)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_range("min_p", self.min_p, 0.0, 1.0)
        _check_range("typical_p", self.typical_p, 0.0, 1.0)
        _check_range("repeat_penalty", self.repeat_penalty, 0.0, 100.0)
        _check_range("repeat_last_n", self.repeat_last_n, -1, 1 << 20)
        _check_range("presence_penalty", self.presence_penalty, -100.0, 100.0)
        _check_range("frequency_penalty", self.frequency_penalty, -100.0, 100.0)
        for name in ("top_k", "repeat_last_n"):
            if not isinstance(getattr(self, name), int):
                raise InvalidParameter(f"{name} must be an integer; got {getattr(self, name)!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidParameter(f"seed must be an integer; got {self.seed!r}")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise InvalidParameter(f"seed must be between 0 and {2**32 - 1}; got {self.seed}")
        if self.max_tokens in (-1, -2) and not isinstance(self.max_tokens, bool):
            object.__setattr__(self, "max_tokens", None)
        if self.max_tokens is not None:
            if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
                raise InvalidParameter(f"max_tokens must be an integer; got {self.max_tokens!r}")
            if self.max_tokens < 1:
                raise InvalidParameter(
                    f"max_tokens must be at least 1, or -1 for no limit; got {self.max_tokens}"
                )
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        stops = tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stops):
            raise InvalidParameter(f"stop must be a list of non-empty strings; got {self.stop!r}")
        object.__setattr__(self, "stop", stops)
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar.strip()):
            raise InvalidParameter("grammar must be non-empty GBNF text")
        if self.grammar is not None:
            check_grammar(self.grammar)
        if self.json_schema is not None:
            if self.grammar is not None:
                raise InvalidParameter("give a grammar or a JSON schema, not both")
            check_schema(self.json_schema)
        if self.logprobs is not None and (
            isinstance(self.logprobs, bool)
            or not isinstance(self.logprobs, int)
            or not 0 <= self.logprobs <= MAX_TOP_LOGPROBS
        ):
            raise InvalidParameter(
                f"logprobs (top_logprobs) must be an integer from 0 to {MAX_TOP_LOGPROBS}; "
                f"got {self.logprobs!r}"
            )

    @property
    def greedy(self) -> bool:
        """Temperature 0 means: always the most likely token."""
        return self.temperature <= 0.0

    def with_overrides(self, **overrides: Any) -> SamplingParams:
        """Return a copy with the given fields replaced (None values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidParameter(f"unknown sampling parameter(s): {', '.join(unknown)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class ThinkingBudget:
    """At most `tokens` of reasoning; then the engine writes `close` itself and the answer follows
    (llama.cpp's reasoning budget; Anthropic's `budget_tokens`)."""

    tokens: int
    opened: bool = False  # the prompt opened the block: the reply starts inside it
    open: str = "<think>"
    close: str = "</think>"


@dataclass(frozen=True)
class Usage:
    """Token counts, as the engine counted them."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt tokens, those whose KV cache an earlier request left

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of each phase of one generation."""

    prompt_seconds: float  # prefill: evaluating the prompt up to the first sampled token
    decode_seconds: float  # every later token
    load_seconds: float = 0.0  # loading the model, when this call had to

    def prompt_tokens_per_second(self, usage: Usage) -> float:
        """Prefill speed."""
        return usage.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    def decode_tokens_per_second(self, usage: Usage) -> float:
        """Decode speed, over the tokens after the first (which prefill produced)."""
        decoded = usage.completion_tokens - 1
        return decoded / self.decode_seconds if decoded > 0 and self.decode_seconds > 0 else 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability under the model (before sampling's truncation), and the
    most likely alternatives at that position when they were asked for (most likely first)."""

    piece: bytes  # the token's raw bytes (a token may hold part of a UTF-8 character)
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()

    @property
    def text(self) -> str:
        """The token as text; a partial UTF-8 character shows as U+FFFD, as OpenAI's API does."""
        return self.piece.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output. The last chunk carries finish_reason, usage and timings."""

    text: str
    tokens: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token in `tokens`, when SamplingParams.logprobs asks
    stop: str | None = None  # on the last chunk: the stop string that ended it (None: end of generation)


@dataclass(frozen=True)
class Embeddings:
    """Vectors for some texts, with what reading them took (Ollama's /api/embed counters)."""

    vectors: list[list[float]]  # one L2-normalised vector per text, in order
    prompt_tokens: int  # tokens read, over every text
    load_seconds: float = 0.0  # waiting for the model to load
    total_seconds: float = 0.0  # the whole call, the wait for the model included


@dataclass(frozen=True)
class Ranking:
    """A reranker's relevance scores for some documents against one query."""

    scores: list[float]  # one per document, in order: the model's raw score, higher is more relevant
    prompt_tokens: int  # tokens read, over every (query, document) pair

    def ranked(self, top_n: int | None = None) -> list[tuple[int, float]]:
        """(document index, score), best first; only the first `top_n` when given."""
        order = sorted(enumerate(self.scores), key=lambda pair: -pair[1])
        return order if top_n is None else order[:top_n]


@dataclass(frozen=True)
class Completion:
    """The whole result of a non-streaming generation."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    tokens: tuple[int, ...] = field(default=(), repr=False)
    logprobs: tuple[TokenLogprob, ...] = field(default=(), repr=False)


# A streaming generation: iterate for Chunks; close() cancels it and frees its slot.
ChunkStream = Generator[Chunk, None, None]
