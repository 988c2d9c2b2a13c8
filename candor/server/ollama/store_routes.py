"""Ollama's store routes that change things: /api/pull (streamed progress) and /api/create."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from candor.errors import CandorError, InvalidParameter
from candor.options import SAMPLING_OPTIONS
from candor.scheduler import Scheduler
from candor.server.limits import refuse_surrogates
from candor.store.names import parse_name
from candor.store.registry import now_iso

NDJSON = "application/x-ndjson"
router = APIRouter()


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _unicode_text(cls, data: Any) -> Any:
        return refuse_surrogates(data)


class PullRequest(_Request):
    model: str | None = None
    name: str | None = None
    stream: bool = True
    insecure: bool = False


class CreateRequest(_Request):
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


def scheduler_of(request: Request) -> Scheduler:
    """The app's scheduler."""
    sched: Scheduler = request.app.state.scheduler
    return sched


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
    from candor.store.hf import PullProgress
    from candor.store.hf import pull as hf_pull

    ref = hub_ref(body.model or body.name or "")
    store = scheduler_of(request).store
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
            await asyncio.to_thread(hf_pull, store, ref, progress=report)
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
    store = scheduler_of(request).store
    source = store.find(body.from_)
    if source is None:
        store.resolve(body.from_, allow_paths=False)  # raises the right error
        raise InvalidParameter(f"no model named {body.from_!r}")
    name = parse_name(body.model)
    stamp = now_iso()
    entry = replace(
        source,
        name=str(name),
        system=body.system if body.system is not None else source.system,
        parameters={**source.parameters, **parameters},
        owned_files=(),
        created_at=stamp,
        modified_at=stamp,
        source="copy" if source.source == "builtin" else source.source,
        origin={**source.origin, "created_from": source.name},
    )
    store.registry.put(entry)
    if body.stream:
        lines = [{"status": f"using {source.name}"}, {"status": "writing manifest"}, {"status": "success"}]
        return StreamingResponse(iter([(json.dumps(x) + "\n").encode() for x in lines]), media_type=NDJSON)
    return JSONResponse({"status": "success"})
