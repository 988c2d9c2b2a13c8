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

from candor.errors import CandorError
from candor.pipeline import Reply, ReplyEvent, ReplyRequest
from candor.server.openai import convert
from candor.server.openai import responses as responses_api
from candor.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
)
from candor.server.openai.response_store import ResponseStore
from candor.server.state import library_of, load_model, responses_of, scheduler_of
from candor.server.streaming import collect, opened, reply_events

router = APIRouter(prefix="/v1")


async def _sse(
    events: AsyncIterator[ReplyEvent],
    render: Callable[[ReplyEvent], dict[str, Any]],
    tail: Callable[[ReplyEvent], dict[str, Any] | None],
) -> AsyncIterator[bytes]:
    last: ReplyEvent | None = None
    try:
        async for event in events:
            yield f"data: {json.dumps(render(event))}\n\n".encode()
            last = event
        extra = tail(last) if last is not None else None
        if extra is not None:
            yield f"data: {json.dumps(extra)}\n\n".encode()
    except CandorError as exc:  # after the first byte: one error event, then close
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    """The store's models."""
    return {"object": "list", "data": [convert.model(d) for d in library_of(request).describe_all()]}


async def _started(request: Request, wanted: ReplyRequest) -> Reply:
    """Load the model off the event loop when it is not up, then start the reply."""
    await load_model(request, wanted.model or "")
    return scheduler_of(request).reply(wanted)


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response | dict[str, Any]:
    """Chat, streamed as SSE or whole; tool calls and reasoning are read out of the reply."""
    reply = await _started(request, convert.chat_request(body))
    logprobs = body.logprobs is True
    ident, created = convert.new_id("chatcmpl"), int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = ChatStream(ident, body.model, created, logprobs, include_usage)
        events = reply_events(await opened(reply.handle, request), reply.reader)
        return StreamingResponse(stream.events(events), media_type="text/event-stream")
    whole = await collect(reply.handle, request)
    event = reply.reader.whole(whole.text, whole.last, whole.logprobs)
    message: dict[str, Any] = {"role": "assistant", "content": event.text}
    finish_reason = convert.finish(event.finish_reason)
    if event.thinking:
        message["reasoning_content"] = event.thinking
    if event.tool_calls:
        message["tool_calls"] = convert.tool_calls(event.tool_calls)
        message["content"] = event.text or None
        finish_reason = "tool_calls"
    return convert.chat_completion(
        ident,
        body.model,
        message,
        finish_reason=finish_reason,
        u=event.usage,
        logprobs=convert.chat_logprobs(event.logprobs) if logprobs else None,
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

    async def events(self, events: AsyncIterator[ReplyEvent]) -> AsyncIterator[bytes]:
        """SSE events: reasoning_content and content deltas as they come, tool calls at the end."""
        first = True
        try:
            async for event in events:
                thinking, content, calls = event.thinking, event.text, event.tool_calls
                reason = None
                if event.finish_reason is not None:
                    reason = "tool_calls" if calls else convert.finish(event.finish_reason)
                delta: dict[str, Any] = {"role": "assistant"} if first else {}
                if thinking:
                    delta["reasoning_content"] = thinking
                if content:
                    delta["content"] = content
                if calls:
                    delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(convert.tool_calls(calls))]
                logprobs = convert.chat_logprobs(event.logprobs) if self.logprobs else None
                if len(delta) > int(first) or reason or (logprobs and event.logprobs):
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
                            self.ident, "chat.completion.chunk", self.model, self.created, event.usage
                        )
                    )
        except CandorError as exc:  # after the first byte: one error event, then close
            yield self._event({"error": {"message": str(exc), "type": "server_error"}})
        yield b"data: [DONE]\n\n"


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response | dict[str, Any]:
    """Raw completion, streamed as SSE or whole."""
    wanted = convert.completion_request(body)
    reply = await _started(request, wanted)
    ident, created = convert.new_id("cmpl"), int(time.time())
    offsets = convert.TextLogprobs(str(wanted.prompt))
    logprobs = body.logprobs is not None

    def render(event: ReplyEvent) -> dict[str, Any]:
        return convert.text_chunk(
            ident,
            body.model,
            created,
            event.text,
            finish_reason=convert.finish(event.finish_reason),
            logprobs=offsets.convert(event.logprobs) if logprobs else None,
        )

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def usage(last: ReplyEvent) -> dict[str, Any] | None:
            if not include_usage:
                return None
            return convert.usage_chunk(ident, "text_completion", body.model, created, last.usage)

        events = reply_events(await opened(reply.handle, request), reply.reader)
        return StreamingResponse(_sse(events, render, usage), media_type="text/event-stream")
    whole = await collect(reply.handle, request)
    answer = render(reply.reader.whole(whole.text, whole.last, whole.logprobs))
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


@router.post("/responses", response_model=None)
async def responses(body: ResponsesRequest, request: Request) -> Response | dict[str, Any]:
    """A response, whole or streamed as typed events; `previous_response_id` continues a stored one."""
    store = responses_of(request)
    history = store.get(body.previous_response_id).conversation if body.previous_response_id else ()
    wanted = responses_api.reply_request(body, history)
    reply = await _started(request, wanted)
    shell = responses_api.Shell(responses_api.new_id("resp"), body)
    if body.stream:
        stream = responses_api.ResponseStream(shell)
        events = reply_events(await opened(reply.handle, request), reply.reader)
        return StreamingResponse(
            _response_events(stream, events, store, wanted), media_type="text/event-stream"
        )
    whole = await collect(reply.handle, request)
    event = reply.reader.whole(whole.text, whole.last, whole.logprobs)
    answer = shell.response("completed", responses_api.output(event), event)
    if body.store:
        store.put(shell.ident, answer, responses_api.conversation(wanted, event))
    return answer


async def _response_events(
    stream: responses_api.ResponseStream,
    events: AsyncIterator[ReplyEvent],
    store: ResponseStore,
    wanted: ReplyRequest,
) -> AsyncIterator[bytes]:
    yield stream.start()
    try:
        async for event in events:
            out = stream.events(event)
            if out:
                yield out
            if event.last and stream.final is not None and stream.shell.body.store:
                store.put(stream.shell.ident, stream.final, responses_api.conversation(wanted, event))
    except CandorError as exc:  # after the first byte: the response fails, as OpenAI's stream says so
        failed = stream.shell.response("failed", stream.items)
        failed["error"] = {"code": "server_error", "message": str(exc)}
        payload = json.dumps({"type": "response.failed", "response": failed})
        yield f"event: response.failed\ndata: {payload}\n\n".encode()


@router.get("/responses/{ident}")
async def stored_response(ident: str, request: Request) -> dict[str, Any]:
    """A stored response, as it was returned."""
    return responses_of(request).get(ident).response


@router.delete("/responses/{ident}")
async def delete_response(ident: str, request: Request) -> dict[str, Any]:
    """Forget a stored response."""
    responses_of(request).delete(ident)
    return {"id": ident, "object": "response.deleted", "deleted": True}
