"""Ollama's native API: NDJSON streams by default, `{"error": ...}` bodies, nanosecond durations."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from candor import __version__
from candor.engine.grammar import json_grammar, schema_grammar
from candor.errors import CandorError, InvalidParameter
from candor.prompt.replies import ToolCall
from candor.scheduler import LoadedModel
from candor.server.ollama import convert
from candor.server.ollama.protocol import (
    ChatRequest,
    CopyRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ModelRequest,
)
from candor.server.replies import ReplyStream, plan_reply, read_reply
from candor.server.request_fields import check_options, context_option, keep_alive_seconds, logprobs_option
from candor.server.request_limits import check_grammar_option
from candor.server.state import library_of, load_model, scheduler_of
from candor.server.streaming import Collected, collect, opened
from candor.types import Chunk, FinishReason, Message, SamplingParams

OLLAMA_COMPAT_VERSION = "0.12.0"  # the Ollama API level candor speaks; clients check for a minimum
NDJSON = "application/x-ndjson"

router = APIRouter()


def with_format(options: dict[str, Any], fmt: Any) -> dict[str, Any]:
    """Ollama's `format` ("json" or a JSON schema) as a grammar option."""
    if fmt in (None, ""):
        return options
    if fmt == "json":
        return {**options, "grammar": json_grammar()}
    if isinstance(fmt, dict):
        return {**options, "grammar": schema_grammar(fmt)}
    raise InvalidParameter('format must be "json" or a JSON schema object')


def _refuse_images(images: list[str] | None) -> None:
    if images:
        raise InvalidParameter(
            "vision is not supported yet: candor does not run image inputs; send text only"
        )


async def _generate_lines(
    chunks: AsyncIterator[Chunk], reader: ReplyStream | None, line: Any
) -> AsyncIterator[bytes]:
    """Stream a generation; with a reader, reasoning goes to `thinking` and the answer to `response`."""
    try:
        async for chunk in chunks:
            thinking, text = "", chunk.text
            if reader is not None:
                piece = reader.push(chunk.text)
                thinking, text = piece.thinking, piece.content
                if chunk.finish_reason is not None:
                    rest = reader.finish()
                    thinking += rest.thinking or ""
                    text += rest.content
            yield (json.dumps(line(chunk, text, thinking)) + "\n").encode()
    except CandorError as exc:  # after the first byte an error is one last line
        yield (json.dumps({"error": str(exc)}) + "\n").encode()


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


async def _timed_load(
    request: Request, name: str, *, ctx: int | None, keep_alive: float | None
) -> tuple[LoadedModel, float]:
    """Load the model for a request; and the seconds that took, which its answer reports as load_duration."""
    started = time.perf_counter()
    loaded = await load_model(request, name, ctx=ctx, keep_alive=keep_alive)
    return loaded, time.perf_counter() - started


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
    _refuse_images(body.images)
    if body.raw and body.think not in (None, False):
        raise InvalidParameter("`think` needs the model's chat template, which `raw` skips; omit one of them")
    options = with_format(body.options, body.format)
    check_options(options)
    check_grammar_option(options, "the format (or grammar)")
    keep_alive = keep_alive_seconds(body.keep_alive)
    logprobs = logprobs_option(body.logprobs, body.top_logprobs)
    if not body.prompt and not body.system:
        return await _load_only(request, body.model, keep_alive, chat=False)
    sched = scheduler_of(request)
    ctx = context_option(body.options)
    loaded, waited = await _timed_load(request, body.model, ctx=ctx, keep_alive=keep_alive)
    params = _params(sched.defaults(body.model, chat=not body.raw), logprobs)
    plan, reader = None, None
    if body.raw:
        handle = sched.generate(
            body.model,
            body.prompt,
            options=options,
            params=params,
            keep_alive=keep_alive,
            ctx=ctx,
            load_seconds=waited,
        )
    else:
        plan = plan_reply(loaded, None, "auto", body.think)
        messages = ([Message("system", body.system)] if body.system else []) + [Message("user", body.prompt)]
        handle = sched.chat(
            body.model,
            messages,
            options=options,
            params=params,
            keep_alive=keep_alive,
            ctx=ctx,
            variables=plan.variables,
            load_seconds=waited,
        )
        if body.stream and plan.thinking:
            reader = ReplyStream.for_request(loaded, plan, messages)

    def line(chunk: Chunk, text: str, thinking: str | None) -> dict[str, Any]:
        out = convert.generate_chunk(body.model, chunk)
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
        if logprobs is not None:
            out["logprobs"] = convert.logprobs(chunk.logprobs)
        return out

    if body.stream:
        lines = _generate_lines(await opened(handle, request), reader, line)
        return StreamingResponse(lines, media_type=NDJSON)
    whole = await collect(handle, request)
    if plan is None:
        return line(_whole(whole.text, whole), whole.text, None)
    reply = read_reply(loaded, plan, whole.text)
    return line(_whole(reply.content, whole), reply.content, reply.thinking)


def _params(defaults: SamplingParams, logprobs: int | None) -> SamplingParams | None:
    """The named model's defaults with the request's logprobs (None: the scheduler's defaults as they are)."""
    return None if logprobs is None else defaults.with_overrides(logprobs=logprobs)


def _whole(text: str, whole: Collected) -> Chunk:
    last = whole.last
    return Chunk(
        text,
        logprobs=whole.logprobs,
        finish_reason=last.finish_reason or FinishReason.STOP,
        usage=last.usage,
        timings=last.timings,
    )


def _fallback_header(loaded: LoadedModel) -> dict[str, str]:
    """Say in a header when the model chats through a fallback format rather than its own template."""
    fmt = loaded.chat_format
    return {"X-Candor-Chat-Format": f"fallback; {fmt.name}"} if fmt.is_fallback else {}


@router.post("/api/chat", response_model=None)
async def chat(body: ChatRequest, request: Request) -> Response:
    """Answer a conversation; tools and thinking are read out of the reply."""
    _refuse_images([i for m in body.messages for i in (m.images or [])])
    keep_alive = keep_alive_seconds(body.keep_alive)
    logprobs = logprobs_option(body.logprobs, body.top_logprobs)
    if not body.messages:
        return JSONResponse(await _load_only(request, body.model, keep_alive, chat=True))
    sched = scheduler_of(request)
    ctx = context_option(body.options)
    loaded, waited = await _timed_load(request, body.model, ctx=ctx, keep_alive=keep_alive)
    plan = plan_reply(loaded, body.tools, "auto", body.think)
    options = with_format(body.options, body.format)
    check_options(options)
    check_grammar_option(options, "the format (or grammar)")
    messages = [
        Message.coerce(
            {"role": m.role, "content": m.content or "", "tool_calls": m.tool_calls, "tool_name": m.tool_name}
        )
        for m in body.messages
    ]
    reader = ReplyStream.for_request(loaded, plan, messages) if body.stream else None
    handle = sched.chat(
        body.model,
        messages,
        options=options,
        params=_params(sched.defaults(body.model, chat=True), logprobs),
        keep_alive=keep_alive,
        ctx=ctx,
        tools=plan.tools,
        variables=plan.variables,
        load_seconds=waited,
    )
    headers = _fallback_header(loaded)
    if reader is not None:
        lines = _chat_lines(await opened(handle, request), body.model, reader, logprobs is not None)
        return StreamingResponse(lines, media_type=NDJSON, headers=headers)
    whole = await collect(handle, request)
    reply = read_reply(loaded, plan, whole.text)
    line = convert.chat_chunk(body.model, _whole(reply.content, whole))
    _add_reply(line, reply.thinking, reply.tool_calls)
    if logprobs is not None:
        line["logprobs"] = convert.logprobs(whole.logprobs)
    return JSONResponse(line, headers=headers)


def _add_reply(line: dict[str, Any], thinking: str | None, calls: Sequence[ToolCall]) -> None:
    if thinking:
        line["message"]["thinking"] = thinking
    if calls:
        line["message"]["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]


async def _chat_lines(
    chunks: AsyncIterator[Chunk], model: str, reader: ReplyStream, logprobs: bool
) -> AsyncIterator[bytes]:
    """Stream a chat: reasoning to `thinking` and the answer to `content` as they come; tool calls at the
    end (their text is held back, so it never shows as content)."""
    try:
        async for chunk in chunks:
            line = convert.chat_chunk(model, chunk)
            piece = reader.push(chunk.text)
            thinking, content = piece.thinking, piece.content
            calls: tuple[ToolCall, ...] = ()
            if chunk.finish_reason is not None:
                rest = reader.finish()
                thinking += rest.thinking or ""
                content += rest.content
                calls = rest.tool_calls
            line["message"]["content"] = content
            _add_reply(line, thinking, calls)
            if logprobs:
                line["logprobs"] = convert.logprobs(chunk.logprobs)
            yield (json.dumps(line) + "\n").encode()
    except CandorError as exc:
        yield (json.dumps({"error": str(exc)}) + "\n").encode()


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


def _modified(iso: str) -> str:
    try:
        return convert.timestamp(datetime.fromisoformat(iso).astimezone(timezone.utc))
    except ValueError:
        return iso


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """Every model in the store, each with the identity read from its file."""
    models = []
    for described in library_of(request).describe_all():
        entry, card = described.entry, described.card
        assert entry is not None  # every listed model has a store entry
        item: dict[str, Any] = {
            "name": entry.name,
            "model": entry.name,
            "modified_at": _modified(entry.modified_at),
            "size": entry.size,
            "digest": entry.sha256 or "",
        }
        if card is not None:
            item["details"] = convert.details(card)
            item["capabilities"] = convert.capabilities(card, has_template=card.chat_template is not None)
        item["candor"] = {
            "identity": card.summary() if card else None,
            "usable": described.usable,
            "problem": described.problem,
            "name_claims": [c.message for c in described.name_claims],
        }
        models.append(item)
    return {"models": models}


@router.post("/api/show")
async def show(body: ModelRequest, request: Request) -> JSONResponse:
    """What the model is, its licence text, template and parameters."""
    described = library_of(request).describe(body.target(), allow_paths=False)
    card, fmt = described.readable()
    path, entry = described.path, described.entry
    response = JSONResponse(
        {
            "license": described.license_text(),
            "modelfile": f"# candor does not use Modelfiles; this model is {path}\nFROM {path}\n",
            "parameters": convert.parameters(described.parameters, fmt.stop),
            "template": fmt.template,
            "system": (entry.system if entry else None) or "",
            "details": convert.details(card),
            "model_info": convert.model_info(card),
            "capabilities": convert.capabilities(card, has_template=card.chat_template is not None),
            "modified_at": _modified(entry.modified_at) if entry else convert.timestamp(),
            "candor": {
                "summary": card.summary(),
                "identity": card.lineage(),
                "chat_format": fmt.describe(),
                "chat_format_fallback": fmt.is_fallback,
                "chat_defaults": dict(fmt.options),  # what answers start from without a template of its own
                "name_claims": [c.message for c in described.name_claims],
                # what `candor licenses MODEL` shows besides the text (Ollama's `license` above)
                "license": {
                    "metadata": card.license,
                    "name": card.license_name,
                    "link": card.license_link,
                    "files": [str(p) for p in described.license_files],
                },
            },
        }
    )
    if fmt.is_fallback:
        response.headers["X-Candor-Chat-Format"] = f"fallback; {fmt.name}"
    return response


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """The loaded models."""
    models = []
    for info in scheduler_of(request).loaded():
        expires = info["expires_at"]
        models.append(
            {
                "name": info["name"],
                "model": info["name"],
                "size": info["size"],
                "digest": info["sha256"] or "",
                "details": convert.details(info["card"]),  # as /api/tags describes the model
                "expires_at": convert.timestamp(datetime.fromtimestamp(expires, timezone.utc))
                if expires
                else "0001-01-01T00:00:00Z",
                "size_vram": info["size_vram"],
                "context_length": info["context_length"],
                # candor's own: layers on the GPU and who chose them (the memory plan, or a setting), and
                # whether the weights were read into memory or are mapped from the file, and whether
                # llama.cpp's extra CPU buffer types hold them (the CPU self-test decides)
                "gpu_layers": info["gpu_layers"],
                "placement": info["placement"],
                "weights": info["weights"],
                "cpu_buffers": info["cpu_buffers"],
            }
        )
    return {"models": models}


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
