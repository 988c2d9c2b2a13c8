"""The types every reply format shares, and the JSON helpers the format modules build on."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ARGUMENT_KEYS = ("arguments", "parameters")
_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*?)\n?```\Z", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for, its arguments already decoded."""

    name: str
    arguments: dict[str, Any]
    id: str


@dataclass(frozen=True)
class ParsedReply:
    """A finished reply split into what the user reads, the model's reasoning, and its tool calls."""

    content: str
    thinking: str | None
    tool_calls: tuple[ToolCall, ...]


class ReplyFormat(Protocol):
    """How one model family writes tool calls in its replies.

    A forced call (a grammar built from forced_call_schema) comes out as a bare JSON object
    `{"name": ..., "arguments": {...}}`; every format's parse_tool_calls accepts that reply too.
    """

    name: str

    def parse_tool_calls(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Return the text with the well-formed calls removed, and those calls."""
        ...


def new_call_id() -> str:
    """Make a fresh OpenAI-style tool call id."""
    return "call_" + secrets.token_hex(12)


def decode_arguments(raw: object) -> dict[str, Any] | None:
    """Return arguments as a dict (decoding a JSON string), or None when they are not an object."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return dict(raw) if isinstance(raw, Mapping) else None


def call_from(obj: object, *, require_arguments: bool = False) -> ToolCall | None:
    """Turn a decoded JSON value into a ToolCall, or None when it is not one."""
    if not isinstance(obj, Mapping):
        return None
    spec: Mapping[str, Any] = obj
    if isinstance(spec.get("function"), Mapping):  # OpenAI's {"type": "function", "function": {...}}
        spec = spec["function"]
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    present = [key for key in ARGUMENT_KEYS if key in spec]
    if require_arguments and not present:
        return None
    arguments = decode_arguments(spec[present[0]] if present else None)
    if arguments is None:
        return None
    return ToolCall(name=name.strip(), arguments=arguments, id=new_call_id())


def calls_from(value: object, *, require_arguments: bool = False) -> tuple[ToolCall, ...] | None:
    """Decode one call object or a non-empty list of them; None if any part is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = [call_from(item, require_arguments=require_arguments) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return tuple(call for call in calls if call is not None)


def load_json(text: str) -> tuple[bool, object]:
    """Decode text that must be exactly one JSON value; (False, None) when it is not."""
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def decode_prefix(text: str, start: int = 0) -> tuple[object, int] | None:
    """Decode the JSON value at text[start:] (after whitespace); return it and where it ends."""
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        return _DECODER.raw_decode(text, start)
    except ValueError:
        return None


def bare_calls(text: str) -> tuple[ToolCall, ...] | None:
    """Read a reply that is exactly a JSON call (or list of calls), bare or in a ```json fence."""
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    if not body.startswith(("{", "[")):
        return None
    ok, value = load_json(body)
    return calls_from(value, require_arguments=True) if ok else None
