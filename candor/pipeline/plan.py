"""How one request treats tools and thinking, checked against the model's chat template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from candor.errors import InvalidParameter
from candor.grammar_limits import enforceable
from candor.prompt.replies import forced_call_schema, template_thinks

TOOL_CHOICES = "tool_choice must be 'none', 'auto', 'required' or a named function"


@dataclass(frozen=True)
class ReplyPlan:
    """What to render, what to force and how to read the reply."""

    tools: list[dict[str, Any]] | None = None  # rendered into the template; None: no tools
    forced_schema: Mapping[str, Any] | None = None  # a tool call the reply must be (tool_choice)
    thinking: bool = False  # split <think>...</think> out of the reply
    variables: dict[str, Any] = field(default_factory=dict)  # for the template (enable_thinking)
    # tool calls are read out of the reply; not with tool_choice none, whose tools are still rendered so
    # that an agent's prompt stays the same (and its KV reusable) whatever the turn's choice
    calls: bool = True


def plan_reply(
    model: str,
    template: str | None,
    tools: Sequence[Any] | None,
    tool_choice: Any = "auto",
    think: Any = None,
) -> ReplyPlan:
    """Check a request's tools, tool choice and thinking against a model's chat template."""
    thinks = template_thinks(template)
    if think not in (None, False) and not thinks:
        raise InvalidParameter(f"{model} cannot think (its chat template has no thinking); omit `think`")
    variables = {"enable_thinking": bool(think)} if thinks and think is not None else {}
    thinking = thinks and think is not False
    if not tools:
        return ReplyPlan(None, None, thinking, variables)
    rendered = [_tool(t) for t in tools]
    if tool_choice == "none":
        return ReplyPlan(rendered, None, thinking, variables, calls=False)
    forced = None
    if tool_choice == "required":
        forced = enforceable(forced_call_schema(rendered, None))
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise InvalidParameter(TOOL_CHOICES)
        forced = enforceable(forced_call_schema(rendered, name))
    elif tool_choice not in (None, "auto"):
        raise InvalidParameter(TOOL_CHOICES)
    return ReplyPlan(rendered, forced, thinking, variables)


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
