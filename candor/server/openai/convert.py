"""candor's chunks -> OpenAI's objects. Ids like chatcmpl-... are made here and nowhere else."""

from __future__ import annotations

import secrets
import time
from typing import Any

from candor.types import Chunk, FinishReason, Usage


def new_id(prefix: str) -> str:
    """An OpenAI-style object id."""
    return f"{prefix}-{secrets.token_hex(12)}"


def finish(reason: FinishReason | None) -> str | None:
    """OpenAI's finish_reason."""
    return None if reason is None else reason.value


def usage(u: Usage | None) -> dict[str, int] | None:
    """Exact token counts."""
    if u is None:
        return None
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def chat_delta(ident: str, model: str, created: int, chunk: Chunk, *, first: bool) -> dict[str, Any]:
    """One chat.completion.chunk."""
    delta: dict[str, Any] = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
    if first:
        delta["role"] = "assistant"
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish(chunk.finish_reason)}
        ],
    }


def chat_completion(ident: str, model: str, text: str, last: Chunk) -> dict[str, Any]:
    """A whole chat.completion."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish(last.finish_reason),
            }
        ],
        "usage": usage(last.usage),
    }


def text_chunk(ident: str, model: str, created: int, chunk: Chunk) -> dict[str, Any]:
    """One text_completion chunk."""
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "text": chunk.text, "logprobs": None, "finish_reason": finish(chunk.finish_reason)}
        ],
    }


def usage_chunk(ident: str, obj: str, model: str, created: int, u: Usage | None) -> dict[str, Any]:
    """The extra last chunk of stream_options.include_usage."""
    return {"id": ident, "object": obj, "created": created, "model": model, "choices": [], "usage": usage(u)}
