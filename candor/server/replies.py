"""Tools and thinking for both APIs: what to render, what to force, and how to read the reply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from candor.engine.grammar import schema_grammar
from candor.errors import InvalidParameter
from candor.prompt import render_chat, with_default_system
from candor.prompt.replies import (
    ParsedReply,
    ReplyFormat,
    ThinkingSplitter,
    forced_call_schema,
    parse_reply,
    reply_format,
    split_thinking,
    template_thinks,
)
from candor.prompt.replies.thinking import OPEN_TAG
from candor.scheduler import LoadedModel
from candor.types import Message


@dataclass(frozen=True)
class ReplyPlan:
    """How one chat request treats tools and thinking."""

    tools: list[dict[str, Any]] | None  # rendered into the template
    grammar: str | None  # forces a call when tool_choice requires one
    thinking: bool  # split <think>...</think> out of the reply
    variables: dict[str, Any]


def plan_reply(
    loaded: LoadedModel, tools: Sequence[Any] | None, tool_choice: Any = "auto", think: Any = None
) -> ReplyPlan:
    """Check the request against the model and decide rendering, forcing and parsing."""
    template = loaded.card.chat_template
    thinks = template_thinks(template)
    if think not in (None, False) and not thinks:
        raise InvalidParameter(
            f"{loaded.name} cannot think (its chat template has no thinking); omit `think`"
        )
    variables = {"enable_thinking": bool(think)} if thinks and think is not None else {}
    if not tools or tool_choice == "none":
        return ReplyPlan(None, None, thinks and think is not False, variables)
    rendered = [_tool(t) for t in tools]
    grammar = None
    if tool_choice == "required":
        grammar = schema_grammar(forced_call_schema(rendered, None))
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise InvalidParameter("tool_choice must be 'none', 'auto', 'required' or a named function")
        grammar = schema_grammar(forced_call_schema(rendered, name))
    elif tool_choice not in (None, "auto"):
        raise InvalidParameter("tool_choice must be 'none', 'auto', 'required' or a named function")
    return ReplyPlan(rendered, grammar, thinks and think is not False, variables)


def _tool(raw: Any) -> dict[str, Any]:
    """One tool as sent, checked: the template renders it and a forced call is built from it."""
    spec = raw.get("function", raw) if isinstance(raw, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidParameter(
            "each tool must be an object like {'type': 'function', 'function': {'name': ..., "
            f"'parameters': {{...}}}}; got {str(raw)[:80]}"
        )
    if not isinstance(spec.get("parameters") or {}, Mapping):
        raise InvalidParameter(f"tool {spec['name']!r} has parameters that are not a JSON schema object")
    return dict(raw)


def read_reply(loaded: LoadedModel, plan: ReplyPlan, text: str) -> ParsedReply:
    """Split the finished text into content, thinking and tool calls (calls only when tools were given)."""
    if plan.tools is None:
        thinking, content = split_thinking(text) if plan.thinking else (None, text)
        return ParsedReply(content, thinking, ())
    return parse_reply(text, reply_format(loaded.card.chat_template), thinking=plan.thinking)


def prompt_opens_thinking(loaded: LoadedModel, messages: Sequence[Message], plan: ReplyPlan) -> bool:
    """Whether the rendered prompt ends inside a <think> block (DeepSeek-R1 distills open it for the model).

    The scheduler renders the same prompt; rendering it here too is the only way to know, before the
    first token, that the reply starts inside its reasoning.
    """
    if not plan.thinking:
        return False
    text = render_chat(
        loaded.chat_format,
        with_default_system(messages, loaded.entry.system if loaded.entry else None),
        bos_token=loaded.runner.ready.bos_text,
        eos_token=loaded.runner.ready.eos_text,
        tools=plan.tools,
        variables=plan.variables,
    )
    return text.rstrip().endswith(OPEN_TAG)


@dataclass(frozen=True)
class ReplyPiece:
    """What can be sent of a streaming reply now."""

    thinking: str
    content: str


class ReplyStream:
    """Read a reply while it streams: reasoning and content go out as soon as they are certain; with
    tools the content is held to the end, where the tool calls are read out of it."""

    def __init__(self, plan: ReplyPlan, fmt: ReplyFormat | None, *, started: bool = False) -> None:
        """`fmt` reads tool calls (None: no tools were given); `started`: the prompt opened <think>."""
        self._splitter = ThinkingSplitter(started=started) if plan.thinking else None
        self._format = fmt if plan.tools is not None else None
        self._held: list[str] = []

    @classmethod
    def for_request(cls, loaded: LoadedModel, plan: ReplyPlan, messages: Sequence[Message]) -> ReplyStream:
        """The stream reader for one chat request on this model."""
        fmt = reply_format(loaded.card.chat_template) if plan.tools is not None else None
        return cls(plan, fmt, started=prompt_opens_thinking(loaded, messages, plan))

    def push(self, text: str) -> ReplyPiece:
        """Take the next text of the reply."""
        thinking, content = self._splitter.push(text) if self._splitter else ("", text)
        return self._route(thinking, content)

    def _route(self, thinking: str, content: str) -> ReplyPiece:
        if self._format is not None:
            self._held.append(content)
            return ReplyPiece(thinking, "")
        return ReplyPiece(thinking, content)

    def finish(self) -> ParsedReply:
        """The rest of the reply at its end: held-back text and the tool calls (content holds only what
        was not sent yet)."""
        thinking, content = self._splitter.flush() if self._splitter else ("", "")
        piece = self._route(thinking, content)
        if self._format is None:
            return ParsedReply(piece.content, piece.thinking or None, ())
        rest, calls = self._format.parse_tool_calls("".join(self._held))
        return ParsedReply(rest, piece.thinking or None, calls)
