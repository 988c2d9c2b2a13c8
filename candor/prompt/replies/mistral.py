"""Mistral: `[TOOL_CALLS] [{...}, ...]`, or the newer `[TOOL_CALLS]name[ARGS]{...}` repeated."""

from __future__ import annotations

from candor.prompt.replies.base import (
    ToolCall,
    bare_calls,
    calls_from,
    decode_arguments,
    decode_prefix,
    new_call_id,
)

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"


def _segment(segment: str) -> tuple[tuple[ToolCall, ...], str] | None:
    """Decode the calls one [TOOL_CALLS] segment starts with, and the text after them; None if none."""
    body = segment.lstrip()
    if body.startswith(("[", "{")):
        decoded = decode_prefix(body)
        calls = calls_from(decoded[0]) if decoded else None
        return (calls, body[decoded[1] :]) if calls and decoded else None
    head, args_tag, tail = body.partition(ARGS)
    name = head.partition(CALL_ID)[0].strip()
    decoded = decode_prefix(tail) if args_tag else None
    if not name or decoded is None:
        return None
    arguments = decode_arguments(decoded[0])
    if arguments is None:
        return None
    return (ToolCall(name=name, arguments=arguments, id=new_call_id()),), tail[decoded[1] :]


class MistralFormat:
    """Calls after the [TOOL_CALLS] marker, as a JSON list or as name[ARGS]{...} pairs."""

    name = "mistral"

    def parse_tool_calls(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Return the text outside the well-formed calls, and the calls."""
        first, *segments = text.split(TOOL_CALLS)
        if not segments:
            bare = bare_calls(text)
            return ("", bare) if bare else (text, ())
        calls: list[ToolCall] = []
        kept = [first]
        for segment in segments:
            parsed = _segment(segment)
            if parsed is None:
                kept.append(TOOL_CALLS + segment)  # malformed: it stays in the content
                continue
            calls.extend(parsed[0])
            kept.append(parsed[1])
        if not calls:
            return text, ()
        return "".join(kept).strip(), tuple(calls)
