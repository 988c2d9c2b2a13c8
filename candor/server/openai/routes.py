"""OpenAI's API: SSE streams ending with `data: [DONE]`, `{"error": {...}}` bodies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from candor.engine.grammar import json_grammar, schema_grammar
from candor.errors import CandorError, InvalidParameter
from candor.prompt.replies import ToolCall
from candor.server.openai import convert
from candor.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    _Sampling,
)
from candor.server.replies import ReplyStream, plan_reply, read_reply
from candor.server.request_fields import logprobs_option
from candor.server.request_limits import check_grammar
from candor.server.state import library_of, load_model, scheduler_of
from candor.server.streaming import collect, opened
from candor.types import Chunk, Message, SamplingParams

router = APIRouter(prefix="/v1")


def options_of(body: _Sampling) -> dict[str, Any]:
    """OpenAI (and llama-server) fields -> Ollama-named options."""
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
        check_grammar(grammar, "the response_format schema (or grammar)")
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
    chunks: AsyncIterator[Chunk],
    render: Callable[[Chunk, bool], dict[str, Any]],
    tail: Callable[[Chunk], dict[str, Any] | None],
) -> AsyncIterator[bytes]:
    first = True
    last: Chunk | None = None
    try:
        async for chunk in chunks:
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
    for described in library_of(request).describe_all():
        created = int(time.time())
        data.append(
            {
                "id": described.name,
                "object": "model",
                "created": created,
                "owned_by": "candor",
                "candor": {
                    "identity": described.card.summary() if described.card else None,
                    "name_claims": [c.message for c in described.name_claims],
                },
            }
        )
    return {"object": "list", "data": data}


def _params(defaults: SamplingParams, ignore_eos: bool, logprobs: int | None) -> SamplingParams | None:
    """The named model's defaults with llama-server's ignore_eos and the request's logprobs, when asked."""
    if not ignore_eos and logprobs is None:
        return None
    return defaults.with_overrides(ignore_eos=ignore_eos or None, logprobs=logprobs)


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response | dict[str, Any]:
    """Chat, streamed as SSE or whole; tool calls and reasoning are read out of the reply."""
    options = options_of(body)
    logprobs = logprobs_option(body.logprobs, body.top_logprobs)
    sched = scheduler_of(request)
    loaded = await load_model(request, body.model)
    plan = plan_reply(loaded, body.tools, body.tool_choice or "auto")
    if plan.grammar is not None:
        if "grammar" in options:
            raise InvalidParameter("a required tool call and response_format cannot be combined")
        check_grammar(plan.grammar, "the forced tool call's parameters schema")
        options["grammar"] = plan.grammar
    messages = [
        Message.coerce(
            {"role": m.role, "content": _text(m.content), "tool_calls": m.tool_calls, "name": m.name}
        )
        for m in body.messages
    ]
    reader = ReplyStream.for_request(loaded, plan, messages) if body.stream else None
    handle = sched.chat(
        body.model,
        messages,
        options=options,
        params=_params(sched.defaults(body.model, chat=True), body.ignore_eos, logprobs),
        tools=plan.tools,
        variables=plan.variables,
    )
    ident, created = convert.new_id("chatcmpl"), int(time.time())
    if reader is not None:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = ChatStream(ident, body.model, created, logprobs is not None, include_usage)
        return StreamingResponse(
            stream.events(await opened(handle, request), reader), media_type="text/event-stream"
        )
    whole = await collect(handle, request)
    reply = read_reply(loaded, plan, whole.text)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    finish_reason = convert.finish(whole.last.finish_reason)
    if reply.thinking:
        message["reasoning_content"] = reply.thinking
    if reply.tool_calls:
        message["tool_calls"] = convert.tool_calls(reply.tool_calls)
        message["content"] = reply.content or None
        finish_reason = "tool_calls"
    return convert.chat_completion(
        ident,
        body.model,
        message,
        finish_reason=finish_reason,
        u=whole.last.usage,
        logprobs=convert.chat_logprobs(whole.logprobs) if logprobs is not None else None,
    )


@dataclass(frozen=True)
class ChatStream:
    """How one streamed chat is written: its ids, and whether it carries logprobs and a usage chunk."""

    ident: str
    model: str
    created: int
    logprobs: bool
    include_usage: bool

    def _event(self, payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    async def events(self, chunks: AsyncIterator[Chunk], reader: ReplyStream) -> AsyncIterator[bytes]:
        """SSE events: reasoning_content and content deltas as they come, tool calls at the end."""
        first = True
        try:
            async for chunk in chunks:
                piece = reader.push(chunk.text)
                thinking, content = piece.thinking, piece.content
                calls: tuple[ToolCall, ...] = ()
                reason = None
                if chunk.finish_reason is not None:
                    rest = reader.finish()
                    thinking += rest.thinking or ""
                    content += rest.content
                    calls = rest.tool_calls
                    reason = "tool_calls" if calls else convert.finish(chunk.finish_reason)
                delta: dict[str, Any] = {"role": "assistant"} if first else {}
                if thinking:
                    delta["reasoning_content"] = thinking
                if content:
                    delta["content"] = content
                if calls:
                    delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(convert.tool_calls(calls))]
                logprobs = convert.chat_logprobs(chunk.logprobs) if self.logprobs else None
                if len(delta) > int(first) or reason or (logprobs and chunk.logprobs):
                    first = False
                    yield self._event(
                        convert.chat_delta(
                            self.ident,
                            self.model,
                            self.created,
                            delta,
                            finish_reason=reason,
                            logprobs=logprobs,
                        )
                    )
                if reason is not None and self.include_usage:
                    yield self._event(
                        convert.usage_chunk(
                            self.ident, "chat.completion.chunk", self.model, self.created, chunk.usage
                        )
                    )
        except CandorError as exc:  # after the first byte: one error event, then close
            yield self._event({"error": {"message": str(exc), "type": "server_error"}})
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
    logprobs = body.logprobs
    sched = scheduler_of(request)
    await load_model(request, body.model)
    params = _params(sched.defaults(body.model), body.ignore_eos, logprobs)
    handle = sched.generate(body.model, prompt, options=options, params=params)
    ident, created = convert.new_id("cmpl"), int(time.time())
    offsets = convert.TextLogprobs(prompt)

    def render(chunk: Chunk, text: str) -> dict[str, Any]:
        return convert.text_chunk(
            ident,
            body.model,
            created,
            text,
            finish_reason=convert.finish(chunk.finish_reason),
            logprobs=offsets.convert(chunk.logprobs) if logprobs is not None else None,
        )

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(
                await opened(handle, request),
                lambda c, _first: render(c, c.text),
                lambda last: (
                    convert.usage_chunk(ident, "text_completion", body.model, created, last.usage)
                    if include_usage
                    else None
                ),
            ),
            media_type="text/event-stream",
        )
    whole = await collect(handle, request)
    answer = render(
        Chunk(whole.text, logprobs=whole.logprobs, finish_reason=whole.last.finish_reason), whole.text
    )
    answer["usage"] = convert.usage(whole.last.usage)
    return answer


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """Embeddings, one per input."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await asyncio.to_thread(scheduler_of(request).embed, body.model, texts)
    return {
        "object": "list",
        "model": body.model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(result.vectors)],
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
