"""Llama 3.1 / 3.2: the reply is a JSON call (or several, separated by `;`), maybe after <|python_tag|>."""

from __future__ import annotations

from candor.prompt.replies.base import ToolCall, bare_calls, call_from, decode_prefix

PYTHON_TAG = "<|python_tag|>"


def _call_sequence(body: str) -> tuple[ToolCall, ...] | None:
    """Decode `{...}; {...}` that fills the whole body, or None."""
    calls: list[ToolCall] = []
    at = 0
    while True:
        decoded = decode_prefix(body, at)
        if decoded is None:
            return None
        call = call_from(decoded[0], require_arguments=True)
        if call is None:
            return None
        calls.append(call)
        rest = body[decoded[1] :].lstrip()
        if rest.startswith(";"):
            rest = rest[1:].lstrip()
        if not rest:
            return tuple(calls)
        at = len(body) - len(rest)


class Llama3Format:
    """`{"name": ..., "parameters": {...}}` (or with "type": "function"), `;`-separated."""

    name = "llama3"

    def parse_tool_calls(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Return the text before the calls and the calls, or the text unchanged if it holds none."""
        prefix, tag, body = text.rpartition(PYTHON_TAG)
        if not tag:
            prefix, body = "", text
        if body.strip().startswith("{"):
            calls = _call_sequence(body.strip())
            if calls:
                return prefix.strip(), calls
        bare = bare_calls(text)
        return ("", bare) if bare else (text, ())
