"""Tools and thinking for both APIs: what to render, what to force, and how to read the reply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from candor.engine.grammar import schema_grammar
from candor.errors import InvalidParameter
from candor.prompt.replies import (
    ParsedReply,
    forced_call_schema,
    parse_reply,
    reply_format,
    split_thinking,
    template_thinks,
)
from candor.scheduler import LoadedModel


@dataclass(frozen=True)
class ReplyPlan:
    """How one chat request treats tools and thinking."""

    tools: list[dict[str, Any]] | None  # rendered into the template
    grammar: str | None  # forces a call when tool_choice requires one
    thinking: bool  # split <think>...</think> out of the reply
    variables: dict[str, Any]

    @property
    def buffered(self) -> bool:
        """Tool calls are only known at the end: such replies are sent whole."""
        return self.tools is not None


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
    rendered = [dict(t) for t in tools]
    grammar = None
    if tool_choice == "required":
        grammar = schema_grammar(forced_call_schema(rendered, None))
    elif isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name")
        if not isinstance(name, str):
            raise InvalidParameter("tool_choice must be 'none', 'auto', 'required' or a named function")
        grammar = schema_grammar(forced_call_schema(rendered, name))
    elif tool_choice not in (None, "auto"):
        raise InvalidParameter("tool_choice must be 'none', 'auto', 'required' or a named function")
    return ReplyPlan(rendered, grammar, thinks and think is not False, variables)


def read_reply(loaded: LoadedModel, plan: ReplyPlan, text: str) -> ParsedReply:
    """Split the finished text into content, thinking and tool calls (calls only when tools were given)."""
    if plan.tools is None:
        thinking, content = split_thinking(text) if plan.thinking else (None, text)
        return ParsedReply(content, thinking, ())
    return parse_reply(text, reply_format(loaded.card.chat_template), thinking=plan.thinking)
