"""Anthropic's Messages API: `/v1/messages` (whole, or streamed as named SSE events) and token counting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from candor.errors import CandorError
from candor.pipeline import ReplyEvent, ReplyReader
from candor.server.anthropic import convert
from candor.server.anthropic.protocol import CountTokensRequest, MessagesRequest
from candor.server.errors import anthropic_error, status_of
from candor.server.state import load_model, scheduler_of
from candor.server.streaming import collect, opened_or_waiting
from candor.types import Chunk

router = APIRouter(prefix="/v1")
# A stream starts with its first token, so that an error before it gets its own status; a prompt that
# takes longer to read (an agent's tens of thousands of tokens) starts it anyway, with a ping every so often.
PATIENCE_SECONDS = 1.0
PING_SECONDS = 5.0


@router.post("/messages", response_model=None)
async def messages(body: MessagesRequest, request: Request) -> Response | dict[str, Any]:
    """A message, whole or streamed; thinking and tool_use blocks are read out of the reply."""
    wanted = convert.messages_request(body)
    await load_model(request, body.model)
    reply = scheduler_of(request).reply(wanted)
    ident, stops = convert.new_id(), body.stop_sequences or []
    if body.stream:
        stream = convert.MessageStream(ident, body.model, stops)
        chunks = await opened_or_waiting(reply.handle, request, PATIENCE_SECONDS, PING_SECONDS)
        return StreamingResponse(_sse(stream, _events(chunks, reply.reader)), media_type="text/event-stream")
    whole = await collect(reply.handle, request)
    return convert.message(
        ident, body.model, reply.reader.whole(whole.text, whole.last, whole.logprobs), stops
    )


async def _events(
    chunks: AsyncIterator[Chunk | None], reader: ReplyReader
) -> AsyncIterator[ReplyEvent | None]:
    async for chunk in chunks:
        yield None if chunk is None else reader.read(chunk)


async def _sse(
    stream: convert.MessageStream, events: AsyncIterator[ReplyEvent | None]
) -> AsyncIterator[bytes]:
    yield stream.start()
    try:
        async for event in events:
            out = stream.ping() if event is None else stream.events(event)
            if out:
                yield out
    except CandorError as exc:  # after the first byte: one error event, then close
        _, body = anthropic_error(status_of(exc), str(exc))
        yield f"event: error\ndata: {json.dumps(body)}\n\n".encode()


@router.post("/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, request: Request) -> dict[str, int]:
    """The prompt tokens the same request to /v1/messages would report as usage.input_tokens."""
    wanted = convert.count_request(body)
    await load_model(request, body.model)
    return {"input_tokens": await asyncio.to_thread(scheduler_of(request).count_tokens, wanted)}
