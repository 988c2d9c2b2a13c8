"""Ollama's store routes that change things: /api/pull (streamed progress) and /api/create."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from candor.errors import CandorError, InvalidParameter
from candor.parameters import SAMPLING_OPTIONS, apply_options
from candor.server.request_limits import UnicodeRequest
from candor.server.state import library_of
from candor.types import SamplingParams

if TYPE_CHECKING:
    from candor.store.library import PullProgress

NDJSON = "application/x-ndjson"
router = APIRouter()


class PullRequest(UnicodeRequest):
    model: str | None = None
    name: str | None = None
    stream: bool = True
    insecure: bool = False


class CreateRequest(UnicodeRequest):
    model: str = Field(min_length=1)
    from_: str | None = Field(default=None, alias="from")
    system: str | None = None
    parameters: dict[str, Any] | None = None
    template: str | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    quantize: str | None = None
    messages: list[Any] | None = None
    license: str | list[str] | None = None
    stream: bool = True


def hub_ref(name: str) -> str:
    """Only Hugging Face GGUF repositories can be pulled; say so for Ollama-registry names."""
    if "/" not in name:
        raise InvalidParameter(
            f"{name!r} names a model in Ollama's registry, which candor does not pull from; pull a GGUF from "
            "Hugging Face instead, e.g. hf.co/ORG/REPO:Q4_K_M"
        )
    return name


@router.post("/api/pull", response_model=None)
async def pull(body: PullRequest, request: Request) -> Response:
    """Download a model from Hugging Face, reporting progress as Ollama does."""
    ref = hub_ref(body.model or body.name or "")
    library = library_of(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def report(progress: PullProgress) -> None:
        line: dict[str, Any] = {"status": progress.status}
        if progress.digest:
            line["digest"] = progress.digest
        if progress.total is not None:
            line["total"] = progress.total
        if progress.completed is not None:
            line["completed"] = progress.completed
        loop.call_soon_threadsafe(queue.put_nowait, line)

    async def work() -> None:
        try:
            await asyncio.to_thread(library.pull, ref, progress=report)
        except CandorError as exc:
            await queue.put({"error": str(exc)})
        finally:
            await queue.put(None)

    task = asyncio.create_task(work())
    if not body.stream:
        last: dict[str, Any] = {}
        while (item := await queue.get()) is not None:
            last = item
        await task
        if "error" in last:
            return JSONResponse(last, status_code=400)
        return JSONResponse({"status": "success"})

    async def lines() -> AsyncIterator[bytes]:
        while (item := await queue.get()) is not None:
            yield (json.dumps(item) + "\n").encode()
        await task

    return StreamingResponse(lines(), media_type=NDJSON)


@router.post("/api/create", response_model=None)
async def create(body: CreateRequest, request: Request) -> Response:
    """A new name for a model in the store, with its own system prompt and parameters."""
    unsupported = [k for k in ("template", "files", "adapters", "quantize", "messages") if getattr(body, k)]
    if unsupported:
        raise InvalidParameter(
            f"candor cannot create models with {', '.join(unsupported)} yet; create from an existing model "
            "with `from`, `system` and `parameters`"
        )
    if not body.from_:
        raise InvalidParameter("give `from`: the store model to build on (see /api/tags)")
    parameters = dict(body.parameters or {})
    unknown = sorted(set(parameters) - set(SAMPLING_OPTIONS) - {"stop", "num_ctx"})
    if unknown:
        raise InvalidParameter(f"unknown parameter(s): {', '.join(unknown)}")
    library = library_of(request)
    source = library.find(body.from_)
    if source is None:
        library.resolve(body.from_, allow_paths=False)  # raises the right error
        raise InvalidParameter(f"no model named {body.from_!r}")
    merged = {**source.parameters, **parameters}
    apply_options(
        SamplingParams(), {k: v for k, v in merged.items() if k != "num_ctx"}
    )  # a bad value: 400 now
    system = body.system if body.system is not None else source.system
    library.derive(source, body.model, system=system, parameters=merged)
    if body.stream:
        lines = [{"status": f"using {source.name}"}, {"status": "writing manifest"}, {"status": "success"}]
        return StreamingResponse(iter([(json.dumps(x) + "\n").encode() for x in lines]), media_type=NDJSON)
    return JSONResponse({"status": "success"})
