"""llama-server's /tokenize, /detokenize, /apply-template, /infill and /rerank."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from candor.errors import CandorError, InvalidParameter
from candor.pipeline import ReplyEvent
from candor.server.llamacpp import convert
from candor.server.llamacpp.protocol import (
    ApplyTemplateRequest,
    DetokenizeRequest,
    InfillRequest,
    RerankRequest,
    TokenizeRequest,
)
from candor.server.state import load_model, scheduler_of
from candor.server.streaming import collect, opened, reply_events

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    """Token ids of `content`, with their pieces when asked."""
    sched = scheduler_of(request)
    tokens = await asyncio.to_thread(
        sched.tokenize,
        body.model,
        body.content,
        add_special=body.add_special,
        parse_special=body.parse_special,
    )
    if not body.with_pieces:
        return {"tokens": tokens}
    pieces = await asyncio.to_thread(sched.pieces, body.model, tokens)
    return {"tokens": [convert.piece(t, p) for t, p in zip(tokens, pieces, strict=True)]}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, str]:
    """The text of token ids."""
    return {"content": await asyncio.to_thread(scheduler_of(request).detokenize, body.model, body.tokens)}


@router.post("/apply-template")
async def apply_template(body: ApplyTemplateRequest, request: Request) -> dict[str, str]:
    """The prompt a conversation becomes through the model's chat template."""
    wanted = convert.template_request(body)
    return {"prompt": await asyncio.to_thread(scheduler_of(request).render, wanted)}


@router.post("/infill", response_model=None)
async def infill(body: InfillRequest, request: Request) -> Response | dict[str, Any]:
    """Fill in the middle, for editor plugins (llama.vim, llama.vscode): whole, or streamed as SSE."""
    wanted = convert.infill_request(body)
    await load_model(request, body.model or "")
    reply = scheduler_of(request).reply(wanted)
    name = body.model or ""
    if body.stream:
        events = reply_events(await opened(reply.handle, request), reply.reader)
        return StreamingResponse(_sse(events, name), media_type="text/event-stream")
    whole = await collect(reply.handle, request)
    return convert.completion(reply.reader.whole(whole.text, whole.last, whole.logprobs), name)


# llama-server's four paths, and one beside Ollama's routes, all in llama-server's shape.
@router.post("/rerank", response_model=None)
@router.post("/reranking", response_model=None)
@router.post("/v1/rerank", response_model=None)
@router.post("/v1/reranking", response_model=None)
@router.post("/api/rerank", response_model=None)
async def rerank(body: RerankRequest, request: Request) -> dict[str, Any] | list[dict[str, Any]]:
    """Rank documents by a reranker model's relevance to the query, best first."""
    documents = body.candidates
    if not documents:
        raise InvalidParameter('"documents" must be a non-empty string array')
    ranking = await asyncio.to_thread(scheduler_of(request).rerank, body.model, body.query, documents)
    return convert.rerank_response(body, ranking)


async def _sse(events: AsyncIterator[ReplyEvent], model: str) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield f"data: {json.dumps(convert.completion(event, model))}\n\n".encode()
    except CandorError as exc:  # after the first byte: one error event, then close
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode()
