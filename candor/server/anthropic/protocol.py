"""Request bodies of Anthropic's Messages API (what the official `anthropic` client sends). Unknown fields,
`metadata` among them, are ignored."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from candor.server.request_fields import MAX_CTX
from candor.server.request_limits import UnicodeRequest


class AnthropicMessage(UnicodeRequest):
    role: str
    content: str | list[dict[str, Any]]


class AnthropicTool(UnicodeRequest):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class CountTokensRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=MAX_CTX)  # required, as in Anthropic's API
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    output_config: dict[str, Any] | None = None  # its `format` ({"type": "json_schema", "schema"}) is read
    grammar: str | None = None  # llama-server's GBNF extension; output_config.format takes its place
