"""Hermes / Qwen2.5 / Qwen3: each call is a JSON object between <tool_call> and </tool_call>."""

from __future__ import annotations

import re

from candor.prompt.replies.base import ToolCall, bare_calls, calls_from, load_json

# A block the model left unclosed at the end of its reply still counts.
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


class HermesFormat:
    """`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, any number of times."""

    name = "hermes"

    def parse_tool_calls(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Return the text outside the well-formed blocks, and the calls they hold."""
        calls: list[ToolCall] = []
        kept: list[str] = []
        end = 0
        for block in _BLOCK.finditer(text):
            ok, value = load_json(block.group(1).strip())
            found = calls_from(value) if ok else None
            if found is None:
                continue  # malformed: the block stays in the content
            kept.append(text[end : block.start()])
            end = block.end()
            calls.extend(found)
        if not calls:
            bare = bare_calls(text)
            return ("", bare) if bare else (text, ())
        kept.append(text[end:])
        return "".join(kept).strip(), tuple(calls)
