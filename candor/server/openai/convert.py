"""OpenAI's wire format <-> candor's own: requests -> ReplyRequest; events -> OpenAI's objects. Ids like
chatcmpl-... are made here and nowhere else."""

from __future__ import annotations

import codecs
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from candor.errors import InvalidParameter
from candor.pipeline import JSON_OBJECT, ReplyRequest, ResponseFormat
from candor.prompt.replies import ToolCall
from candor.server.openai.protocol import ChatCompletionRequest, CompletionRequest, _Sampling
from candor.server.request_fields import logprobs_option
from candor.store.library import ModelDescription
from candor.types import FinishReason, Message, TokenLogprob, Usage

# -- requests -------------------------------------------------------------------------------------------


def sampling(body: _Sampling) -> dict[str, Any]:
    """OpenAI's (and llama-server's) sampling fields as SamplingParams fields."""
    values = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "seed": body.seed,
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
        "grammar": body.grammar,
        "ignore_eos": body.ignore_eos or None,
    }
    fields: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if body.seed == -1:
        fields["seed"] = None  # llama-server's -1: a fresh random seed, over any seed the model sets
    if body.stop:
        fields["stop"] = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop)
    return fields


def response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    """OpenAI's response_format: text, json_object, or json_schema with its schema."""
    if not value or value.get("type") in (None, "text"):
        return None
    kind = value.get("type")
    if kind == "json_object":
        return ResponseFormat(JSON_OBJECT)
    if kind == "json_schema":
        spec = value.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidParameter("response_format.json_schema.schema must be a JSON schema object")
        return ResponseFormat(schema)
    raise InvalidParameter(f"response_format type {kind!r} is not one of text, json_object, json_schema")


def _content(content: str | list[dict[str, Any]] | None) -> tuple[str, list[str]]:
    """A message's text, and its images (base64 payloads of data: URLs), from a string or content parts."""
    if content is None or isinstance(content, str):
        return content or "", []
    text, images = [], []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            text.append(str(part.get("text", "")))
        elif kind == "image_url":
            images.append(_image(part.get("image_url")))
        else:
            raise InvalidParameter(
                f"content parts of type {kind!r} are not supported; send text or image_url"
            )
    return "".join(text), images


def _image(spec: Any) -> str:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise InvalidParameter(
            "image_url must be a data: URL with base64 content (data:image/png;base64,...); candor does not "
            "fetch images from the network"
        )
    return url.split(";base64,", 1)[1]


def _sampling_beside(body: _Sampling) -> dict[str, Any]:
    """sampling(), where a response_format takes the place of llama-server's grammar."""
    fields = sampling(body)
    if response_format(body.response_format) is not None:
        fields.pop("grammar", None)
    return fields


def messages(body: ChatCompletionRequest) -> list[Message]:
    """The chat's messages: text and image parts, tool calls and tool results."""
    turns = []
    for m in body.messages:
        text, images = _content(m.content)
        turn = {"role": m.role, "content": text, "tool_calls": m.tool_calls, "name": m.name, "images": images}
        turns.append(Message.coerce(turn))
    return turns


def chat_request(body: ChatCompletionRequest) -> ReplyRequest:
    """/v1/chat/completions: the conversation, tools, tool choice and response format."""
    fields = _sampling_beside(body)
    top = logprobs_option(body.logprobs, body.top_logprobs)
    if top is not None:
        fields["logprobs"] = top
    return ReplyRequest(
        body.model,
        messages(body),
        tools=body.tools,
        tool_choice=body.tool_choice or "auto",
        response_format=response_format(body.response_format),
        sampling=fields,
        thinking_budget=(
            body.reasoning_budget_tokens
            if body.reasoning_budget_tokens is not None
            else body.thinking_budget_tokens
        ),
    )


def completion_request(body: CompletionRequest) -> ReplyRequest:
    """/v1/completions: one raw prompt, continued as it is."""
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidParameter("candor completes one prompt per request; send a string")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    fields = _sampling_beside(body)
    if body.logprobs is not None:
        fields["logprobs"] = body.logprobs
    return ReplyRequest(
        body.model, prompt=prompt, response_format=response_format(body.response_format), sampling=fields
    )


# -- replies --------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """An OpenAI-style object id."""
    return f"{prefix}-{secrets.token_hex(12)}"


def finish(reason: FinishReason | None) -> str | None:
    """OpenAI's finish_reason."""
    return None if reason is None else reason.value


def usage(u: Usage | None) -> dict[str, Any] | None:
    """Exact token counts, with the prompt tokens the prefix cache supplied (OpenAI's cached_tokens)."""
    if u is None:
        return None
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
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


def model(described: ModelDescription) -> dict[str, Any]:
    """One /v1/models entry, with the identity read from the file."""
    return {
        "id": described.name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "candor",
        "candor": {
            "identity": described.card.summary() if described.card else None,
            "name_claims": [c.message for c in described.name_claims],
        },
    }
