"""Read a finished reply: its content, its <think> reasoning, and its tool calls, per model format."""

from __future__ import annotations

from candor.prompt.replies.base import ParsedReply, ReplyFormat, ToolCall
from candor.prompt.replies.forced import forced_call_schema
from candor.prompt.replies.table import FORMATS, reply_format
from candor.prompt.replies.thinking import ThinkingSplitter, split_thinking, template_thinks

__all__ = [
    "FORMATS",
    "ParsedReply",
    "ReplyFormat",
    "ThinkingSplitter",
    "ToolCall",
    "forced_call_schema",
    "parse_reply",
    "reply_format",
    "split_thinking",
    "template_thinks",
]


def parse_reply(text: str, fmt: ReplyFormat, *, thinking: bool, started: bool = False) -> ParsedReply:
    """Split a reply into content, thinking (when `thinking`), and the tool calls in the content.
    `started`: the prompt opened the think block."""
    reasoning, content = split_thinking(text, started=started) if thinking else (None, text)
    content, calls = fmt.parse_tool_calls(content)
    return ParsedReply(content=content, thinking=reasoning, tool_calls=calls)
