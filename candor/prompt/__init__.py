"""Chat templates: the model's own (untrusted, sandboxed) or a built-in fallback, rendered safely."""

from __future__ import annotations

from candor.prompt.budget import RenderLimits
from candor.prompt.fallbacks import TURN_TOKENS
from candor.prompt.formats import (
    FALLBACK_NAMES,
    ChatFormat,
    chat_format_of,
    choose_chat_format,
    describe_options,
    fallback_format,
    render_chat,
    renders_tools,
    with_default_system,
    with_tool_instructions,
)
from candor.prompt.sandbox import render_template

__all__ = [
    "FALLBACK_NAMES",
    "TURN_TOKENS",
    "ChatFormat",
    "RenderLimits",
    "chat_format_of",
    "choose_chat_format",
    "describe_options",
    "fallback_format",
    "render_chat",
    "render_template",
    "renders_tools",
    "with_default_system",
    "with_tool_instructions",
]
