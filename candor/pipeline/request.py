"""What any API asks of a model, in candor's own terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from candor.errors import InvalidParameter
from candor.grammar_limits import check_schema
from candor.types import Message, SamplingParams

# Any JSON object: Ollama's `format: "json"`, OpenAI's `json_object`.
JSON_OBJECT: Mapping[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ResponseFormat:
    """The shape the reply must take: a JSON schema, enforced while decoding."""

    schema: Mapping[str, Any]

    def __post_init__(self) -> None:
        check_schema(self.schema)  # in the calling process: a bad schema is refused before any runner


@dataclass(frozen=True)
class Infill:
    """Fill in the middle: the code before and after the gap, and other files for context."""

    prefix: str
    suffix: str
    extra: tuple[tuple[str, str], ...] = ()  # (file name, text)


@dataclass(frozen=True)
class ReplyRequest:
    """One request for a reply: a conversation (rendered through the model's chat template), or a raw
    prompt (`prompt`, text or token ids, continued as it is).

    `sampling` holds the SamplingParams fields the request sets; the rest come from `params`, or else from
    the model's defaults (its chat format's, then its store entry's parameters).
    """

    model: str | None
    messages: Sequence[Message] = ()
    prompt: str | Sequence[int] | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_choice: Any = "auto"  # "none", "auto", "required" or {"function": {"name": ...}}
    response_format: ResponseFormat | None = None
    think: bool | str | None = None  # None: the template's default
    thinking_budget: int | None = None  # most reasoning tokens before the engine closes the block
    params: SamplingParams | None = None  # a whole set in place of the model's defaults (library callers)
    sampling: Mapping[str, Any] = field(default_factory=dict)
    ctx: int | None = None  # context tokens the request needs (Ollama's num_ctx)
    keep_alive: float | None = None  # seconds; None: the server's default; negative: forever
    infill: Infill | None = None  # with `prompt`: fill this gap, the prompt following the middle marker

    def __post_init__(self) -> None:
        if self.prompt is not None and (self.messages or self.tools):
            raise InvalidParameter("a raw prompt takes no messages or tools")
        self.sampled(SamplingParams())  # unknown names and bad values fail here, before any load
        if any(m.images for m in self.messages):  # no model candor runs sees yet: refused before a load
            raise InvalidParameter(
                "vision is not supported yet: candor does not run image inputs; send text only"
            )

    def sampled(self, base: SamplingParams) -> SamplingParams:
        """`base` with the fields this request sets (None included: "no limit", "a fresh seed")."""
        unknown = sorted(set(self.sampling) - {f.name for f in fields(SamplingParams)})
        if unknown:
            raise InvalidParameter(f"unknown sampling parameter(s): {', '.join(unknown)}")
        return replace(base, **self.sampling)

    @property
    def raw(self) -> bool:
        """Whether the prompt is continued as it is, without the chat template."""
        return self.prompt is not None
