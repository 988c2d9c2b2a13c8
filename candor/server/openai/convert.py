"""candor's chunks -> OpenAI's objects. Ids like chatcmpl-... are made here and nowhere else."""

from __future__ import annotations

import codecs
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from candor.prompt.replies import ToolCall
from candor.types import FinishReason, TokenLogprob, Usage


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


def _token(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's `logprobs`: one entry per token, each with its `top_logprobs`."""
    content = [
        {**_token(e.piece, e.logprob), "top_logprobs": [_token(piece, lp) for piece, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls with JSON-string arguments, as OpenAI's message carries them."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
        for c in calls
    ]


def chat_delta(
    ident: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    *,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One chat.completion.chunk."""
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def chat_completion(
    ident: str,
    model: str,
    message: dict[str, Any],
    *,
    finish_reason: str | None,
    u: Usage | None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole chat.completion."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage(u),
    }


def text_chunk(
    ident: str,
    model: str,
    created: int,
    text: str,
    *,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One text_completion (a chunk of a stream, or the whole)."""
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


class TextLogprobs:
    """The legacy completions' `logprobs` object, chunk by chunk; `text_offset` counts characters from
    the start of the prompt, as OpenAI's does, across every chunk of a stream."""

    def __init__(self, prompt: str) -> None:
        self._offset = len(prompt)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def convert(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        """`{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}` for these tokens."""
        out: dict[str, list[Any]] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for e in entries:
            out["tokens"].append(e.text)
            out["token_logprobs"].append(e.logprob)
            top = {piece.decode("utf-8", errors="replace"): lp for piece, lp in e.top}
            top.setdefault(e.text, e.logprob)  # OpenAI: up to N + 1 entries, the sampled token among them
            out["top_logprobs"].append(top)
            out["text_offset"].append(self._offset)
            # A token may end inside a UTF-8 character: count only the characters it completes.
            self._offset += len(self._decoder.decode(e.piece))
        return out


def usage_chunk(ident: str, obj: str, model: str, created: int, u: Usage | None) -> dict[str, Any]:
    """The extra last chunk of stream_options.include_usage."""
    return {"id": ident, "object": obj, "created": created, "model": model, "choices": [], "usage": usage(u)}
