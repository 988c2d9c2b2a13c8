"""Ollama's native API: NDJSON streams by default, `{"error": ...}` bodies, nanosecond durations."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from candor import __version__
from candor.errors import CandorError
from candor.pipeline import ReplyEvent, ReplyRequest
from candor.server.ollama import convert
from candor.server.ollama.protocol import (
    ChatRequest,
    CopyRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ModelRequest,
)
from candor.server.request_fields import keep_alive_seconds
from candor.server.state import library_of, load_model, scheduler_of
from candor.server.streaming import collect, opened, reply_events

OLLAMA_COMPAT_VERSION = "0.12.0"  # the Ollama API level candor speaks; clients check for a minimum
NDJSON = "application/x-ndjson"

router = APIRouter()


async def _ndjson(
    events: AsyncIterator[ReplyEvent], line: Callable[[ReplyEvent], dict[str, Any]]
) -> AsyncIterator[bytes]:
    """A streamed answer, one JSON line per event; after the first byte an error is one last line."""
    try:
        async for event in events:
            yield (json.dumps(line(event)) + "\n").encode()
    except CandorError as exc:
        yield (json.dumps({"error": str(exc)}) + "\n").encode()


async def _answer(
    request: Request, wanted: ReplyRequest, stream: bool, line: Callable[[ReplyEvent], dict[str, Any]]
) -> Response:
    """Load the model (its time is the answer's load_duration), start the reply, and stream it as NDJSON
    or return it whole."""
    started = time.perf_counter()
    await load_model(request, wanted.model or "", ctx=wanted.ctx, keep_alive=wanted.keep_alive)
    reply = scheduler_of(request).reply(wanted, load_seconds=time.perf_counter() - started)
    headers = {"X-Candor-Chat-Format": f"fallback; {reply.fallback_format}"} if reply.fallback_format else {}
    if stream:
        events = reply_events(await opened(reply.handle, request), reply.reader)
        return StreamingResponse(_ndjson(events, line), media_type=NDJSON, headers=headers)
    whole = await collect(reply.handle, request)
    return JSONResponse(line(reply.reader.whole(whole.text, whole.last, whole.logprobs)), headers=headers)


async def _load_only(request: Request, name: str, keep_alive: float | None, chat: bool) -> dict[str, Any]:
    """An empty prompt loads the model (or, with keep_alive 0, unloads it), as Ollama does."""
    sched = scheduler_of(request)
    # Loading waits for a runner (seconds): off the event loop, so other clients' streams keep flowing.
    if keep_alive == 0:
        await asyncio.to_thread(sched.unload, name)
        reason = "unload"
    else:
        await load_model(request, name, keep_alive=keep_alive)
        reason = "load"
    body: dict[str, Any] = {
        "model": name,
        "created_at": convert.timestamp(),
        "done": True,
        "done_reason": reason,
    }
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    return body


@router.get("/")
@router.head("/")
async def root() -> PlainTextResponse:
    """Ollama clients probe this."""
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
async def version() -> dict[str, str]:
    """Ollama's version field, and candor's marker so candor's own CLI can tell it from an Ollama."""
    return {"version": OLLAMA_COMPAT_VERSION, "candor": __version__}


@router.post("/api/generate", response_model=None)
async def generate(body: GenerateRequest, request: Request) -> Response | dict[str, Any]:
    """Complete a prompt (the chat template applies unless `raw`); reasoning goes to `thinking`."""
    keep_alive = keep_alive_seconds(body.keep_alive)
    wanted = convert.generate_request(body, keep_alive)
    if not body.prompt and not body.system:
        return await _load_only(request, body.model, keep_alive, chat=False)
    logprobs = body.logprobs
    return await _answer(
        request, wanted, body.stream, lambda e: convert.generate_line(body.model, e, logprobs=logprobs)
    )


@router.post("/api/chat", response_model=None)
async def chat(body: ChatRequest, request: Request) -> Response:
    """Answer a conversation; tools and thinking are read out of the reply."""
    keep_alive = keep_alive_seconds(body.keep_alive)
    wanted = convert.chat_request(body, keep_alive)
    if not body.messages:
        return JSONResponse(await _load_only(request, body.model, keep_alive, chat=True))
    logprobs = body.logprobs
    return await _answer(
        request, wanted, body.stream, lambda e: convert.chat_line(body.model, e, logprobs=logprobs)
    )


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
    """Embeddings for one input or a list, with the tokens read and the time taken."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await asyncio.to_thread(
        scheduler_of(request).embed, body.model, texts, keep_alive=keep_alive_seconds(body.keep_alive)
    )
    return {"model": body.model, "embeddings": result.vectors, **convert.embed_metrics(result)}


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request) -> dict[str, Any]:
    """The legacy single-prompt form."""
    result = await asyncio.to_thread(
        scheduler_of(request).embed, body.model, [body.prompt], keep_alive=keep_alive_seconds(body.keep_alive)
    )
    return {"embedding": result.vectors[0]}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """Every model in the store, each with the identity read from its file."""
    return {"models": [convert.listed_model(d) for d in library_of(request).describe_all()]}


@router.post("/api/show")
async def show(body: ModelRequest, request: Request) -> JSONResponse:
    """What the model is, its licence text, template and parameters."""
    described = library_of(request).describe(body.target(), allow_paths=False)
    _, fmt = described.readable()
    headers = {"X-Candor-Chat-Format": f"fallback; {fmt.name}"} if fmt.is_fallback else {}
    return JSONResponse(convert.shown_model(described), headers=headers)


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """The loaded models."""
    return {"models": [convert.loaded_model(info) for info in scheduler_of(request).loaded()]}


@router.delete("/api/delete")
async def delete(body: ModelRequest, request: Request) -> JSONResponse:
    """Remove a name from the store (and unload it, if loaded under that name)."""
    removed = library_of(request).remove(body.target())
    scheduler_of(request).unload_name(removed.entry.name)
    return JSONResponse({})


@router.post("/api/copy")
async def copy(body: CopyRequest, request: Request) -> JSONResponse:
    """Give a model another name."""
    library_of(request).copy(body.source, body.destination)
    return JSONResponse({})
