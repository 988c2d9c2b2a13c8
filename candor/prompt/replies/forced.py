"""A JSON schema for one tool call, for a grammar that forces the model to make it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from candor.errors import InvalidParameter

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _name_and_parameters(tool: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Read a tool as OpenAI sends it ({"type": "function", "function": {...}}) or unwrapped."""
    spec = tool.get("function", tool)
    name = spec.get("name") if isinstance(spec, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidParameter(
            f"each tool needs a function name, as {{'function': {{'name': ...}}}}; got {tool!r}"
        )
    parameters = spec.get("parameters") or _ANY_OBJECT
    if not isinstance(parameters, Mapping):
        raise InvalidParameter(f"tool {name!r} has parameters that are not a JSON schema object")
    return name, dict(parameters)


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def forced_call_schema(tools: Sequence[Mapping[str, Any]], name: str | None) -> dict[str, Any]:
    """Return the schema of a `{"name": ..., "arguments": {...}}` call: to tool `name`, or any tool."""
    if not tools:
        raise InvalidParameter(
            "a tool call was required but no tools were given; pass tools or drop tool_choice"
        )
    table = dict(_name_and_parameters(tool) for tool in tools)
    if name is not None:
        if name not in table:
            raise InvalidParameter(
                f"tool_choice names {name!r}, which is not among the tools: {', '.join(table)}"
            )
        return _call_schema(name, table[name])
    schemas = [_call_schema(tool, parameters) for tool, parameters in table.items()]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
