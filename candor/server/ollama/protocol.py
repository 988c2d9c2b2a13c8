"""Request bodies of Ollama's API (what the official `ollama` client sends). Unknown fields are ignored."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from candor.server.request_limits import UnicodeRequest
from candor.types import MAX_TOP_LOGPROBS


class GenerateRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool = False
    stream: bool = True
    format: Any = None
    images: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    keep_alive: str | float | int | None = None
    think: bool | str | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class ChatMessage(UnicodeRequest):
    role: str
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    thinking: str | None = None
    tool_name: str | None = None


class ChatRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[Any] | None = None
    stream: bool = True
    format: Any = None
    options: dict[str, Any] = Field(default_factory=dict)
    keep_alive: str | float | int | None = None
    think: bool | str | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class EmbedRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    keep_alive: str | float | int | None = None


class EmbeddingsRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    prompt: str = ""
    keep_alive: str | float | int | None = None


class ModelRequest(UnicodeRequest):
    model: str | None = None
    name: str | None = None  # older clients

    def target(self) -> str:
        """The model named by either field."""
        return self.model or self.name or ""


class CopyRequest(UnicodeRequest):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)
