"""Models with no known tool-call syntax: a reply that is exactly one JSON call is a call."""

from __future__ import annotations

from candor.prompt.replies.base import ToolCall, bare_calls


class GenericFormat:
    """A bare `{"name": ..., "arguments": {...}}` reply (or a ```json fence of one); nothing else."""

    name = "generic"

    def parse_tool_calls(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Return ("", calls) when the whole reply is a JSON call, else the text unchanged."""
        calls = bare_calls(text)
        return ("", calls) if calls else (text, ())
