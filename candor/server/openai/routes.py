"""OpenAI's API: SSE streams ending with `data: [DONE]`, `{"error": {...}}` bodies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from candor.engine.grammar import json_grammar, schema_grammar
from candor.errors import CandorError, InvalidParameter
from candor.scheduler import RequestHandle, Scheduler
from candor.server.openai import convert
from candor.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    _Sampling,
)
from candor.server.replies import plan_reply, read_reply
from candor.server.streaming import chunks_of, collect
from candor.types import Chunk, Message

router = APIRouter(prefix="/v1")


def scheduler_of(request: Request) -> Scheduler:
    """The app's scheduler."""
    sched: Scheduler = request.app.state.scheduler
    return sched


def options_of(body: _Sampling) -> dict[str, Any]:
    """OpenAI (and llama-server) fields -> Ollama-named options."""
    if body.logprobs:
        raise InvalidParameter("logprobs are not supported yet by candor; omit `logprobs`")
    limit = body.max_completion_tokens or body.max_tokens
    values = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "seed": body.seed,
        "num_predict": limit,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repeat_penalty": body.repeat_penalty,
    }
    options: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if body.stop:
        options["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    grammar = response_grammar(body.response_format) or body.grammar
    if grammar:
        options["grammar"] = grammar
    return options


def response_grammar(response_format: dict[str, Any] | None) -> str | None:
    """OpenAI's response_format as a grammar: json_object, or json_schema with its schema."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return json_grammar()
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidParameter("response_format.json_schema.schema must be a JSON schema object")
        return schema_grammar(schema)
    raise InvalidParameter(f"response_format type {kind!r} is not one of text, json_object, json_schema")


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise InvalidParameter("vision is not supported yet: send text content parts only")
    return "".join(parts)


async def _sse(
    handle: RequestHandle,
    render: Callable[[Chunk, bool], dict[str, Any]],
    tail: Callable[[Chunk], dict[str, Any] | None],
) -> AsyncIterator[bytes]:
    first = True
    last: Chunk | None = None
    try:
        async for chunk in chunks_of(handle):
            yield f"data: {json.dumps(render(chunk, first))}\n\n".encode()
            first = False
            last = chunk
        extra = tail(last) if last is not None else None
        if extra is not None:
            yield f"data: {json.dumps(extra)}\n\n".encode()
    except CandorError as exc:  # after the first byte: one error event, then close
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    """The store's models."""
    data = []
    for listed in scheduler_of(request).store.list():
        created = int(time.time())
        data.append(
            {
                "id": listed.entry.name,
                "object": "model",
                "created": created,
                "owned_by": "candor",
                "candor": {
                    "identity": listed.card.summary() if listed.card else None,
                    "name_claims": [c.message for c in listed.claims],
                },
            }
        )
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response | dict[str, Any]:
    """Chat, streamed as SSE or whole; tool calls and reasoning are read out of the reply."""
    options = options_of(body)
    sched = scheduler_of(request)
    loaded = sched.load(body.model)
    plan = plan_reply(loaded, body.tools, body.tool_choice or "auto")
    if plan.grammar is not None:
        if "grammar" in options:
            raise InvalidParameter("a required tool call and response_format cannot be combined")
        options["grammar"] = plan.grammar
    messages = [
        Message.coerce(
            {"role": m.role, "content": _text(m.content), "tool_calls": m.tool_calls, "name": m.name}
        )
        for m in body.messages
    ]
    params = loaded.defaults.with_overrides(ignore_eos=True) if body.ignore_eos else None
    handle = sched.chat(
        body.model, messages, options=options, params=params, tools=plan.tools, variables=plan.variables
    )
    ident, created = convert.new_id("chatcmpl"), int(time.time())
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    if body.stream and not plan.buffered and not plan.thinking:
        return StreamingResponse(
            _sse(
                handle,
                lambda c, first: convert.chat_delta(ident, body.model, created, c, first=first),
                lambda last: (
                    convert.usage_chunk(ident, "chat.completion.chunk", body.model, created, last.usage)
                    if include_usage
                    else None
                ),
            ),
            media_type="text/event-stream",
        )
    text, last = await collect(handle)
    reply = read_reply(loaded, plan, text)
    whole = convert.chat_completion(ident, body.model, reply.content, last)
    message, choice = whole["choices"][0]["message"], whole["choices"][0]
    if reply.thinking:
        message["reasoning_content"] = reply.thinking
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ]
        message["content"] = reply.content or None
        choice["finish_reason"] = "tool_calls"
    if not body.stream:
        return whole
    return StreamingResponse(_whole_as_sse(whole, include_usage), media_type="text/event-stream")


async def _whole_as_sse(whole: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A reply that had to be read whole (tool calls, reasoning), sent as one delta and a finish chunk."""
    base = {
        "id": whole["id"],
        "object": "chat.completion.chunk",
        "created": whole["created"],
        "model": whole["model"],
    }
    choice = whole["choices"][0]
    delta = {
        "role": "assistant",
        **{k: v for k, v in choice["message"].items() if k != "role" and v is not None},
    }
    if "tool_calls" in delta:
        delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(delta["tool_calls"])]
    for payload in (
        {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]},
        {
            **base,
            "choices": [
                {"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}
            ],
        },
        *([{**base, "choices": [], "usage": whole["usage"]}] if include_usage else []),
    ):
        yield f"data: {json.dumps(payload)}\n\n".encode()
    yield b"data: [DONE]\n\n"


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response | dict[str, Any]:
    """Raw completion, streamed as SSE or whole."""
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidParameter("candor completes one prompt per request; send a string")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    options = options_of(body)
    sched = scheduler_of(request)
    params = sched.load(body.model).defaults.with_overrides(ignore_eos=True) if body.ignore_eos else None
    handle = sched.generate(body.model, prompt, options=options, params=params)
    ident, created = convert.new_id("cmpl"), int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(
                handle,
                lambda c, _first: convert.text_chunk(ident, body.model, created, c),
                lambda last: (
                    convert.usage_chunk(ident, "text_completion", body.model, created, last.usage)
                    if include_usage
                    else None
                ),
            ),
            media_type="text/event-stream",
        )
    text, last = await collect(handle)
    whole = convert.text_chunk(ident, body.model, created, Chunk(text, (), last.finish_reason))
    whole["usage"] = convert.usage(last.usage)
    return whole


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """Embeddings, one per input."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = scheduler_of(request).embed(body.model, texts)
    return {
        "object": "list",
        "model": body.model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
