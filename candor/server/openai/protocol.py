"""Request bodies of OpenAI's API (what the official `openai` client sends). Unknown fields are ignored."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from candor.server.request_fields import MAX_CTX
from candor.server.request_limits import UnicodeRequest
from candor.types import MAX_TOP_LOGPROBS


class StreamOptions(UnicodeRequest):
    include_usage: bool = False


class ChatCompletionMessage(UnicodeRequest):
    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class _Sampling(UnicodeRequest):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_CTX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_CTX)
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    # llama-server's extensions that map onto candor's sampling
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    ignore_eos: bool = False
    response_format: dict[str, Any] | None = None
    grammar: str | None = None  # llama-server's GBNF extension
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatCompletionMessage] = Field(min_length=1)
    # llama-server's reasoning budget: the most reasoning tokens before the answer must start
    reasoning_budget_tokens: int | None = Field(default=None, ge=0)
    thinking_budget_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class CompletionRequest(_Sampling):
    prompt: str | list[str] = ""
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)  # N: the N likeliest tokens too


class EmbeddingRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: str | None = None


class ResponsesRequest(UnicodeRequest):
    """OpenAI's Responses API (what Codex and the Agents SDK send)."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_CTX)
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    reasoning: dict[str, Any] | None = None
    store: bool = True
    previous_response_id: str | None = None
    grammar: str | None = None  # llama-server's GBNF extension; text.format takes its place
