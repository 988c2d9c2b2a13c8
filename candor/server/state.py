"""What the routes share through the app: the scheduler and the library that create_app puts on app.state."""

from __future__ import annotations

import asyncio

from fastapi import Request

from candor.scheduler import Scheduler
from candor.scheduler.scheduler import LoadedModel
from candor.server.openai.response_store import ResponseStore
from candor.store.library import Library


def responses_of(request: Request) -> ResponseStore:
    """The responses kept for `previous_response_id` (OpenAI's Responses API)."""
    store: ResponseStore = request.app.state.responses
    return store


def scheduler_of(request: Request) -> Scheduler:
    """The app's scheduler."""
    sched: Scheduler = request.app.state.scheduler
    return sched


def library_of(request: Request) -> Library:
    """The app's library: the model store, as the routes that list, describe and change names use it."""
    library: Library = request.app.state.library
    return library


async def load_model(
    request: Request, model: str, *, ctx: int | None = None, keep_alive: float | None = None
) -> LoadedModel:
    """The scheduler's load(): in a worker thread when it has to start a runner (seconds), so other
    clients' streams keep flowing; at once when the model is up (a thread round trip per request spreads
    requests sent together too far apart for the runner to start them in one step).
    """
    sched = scheduler_of(request)
    if sched.is_ready(model, ctx=ctx):
        return sched.load(model, ctx=ctx, keep_alive=keep_alive)
    return await asyncio.to_thread(sched.load, model, ctx=ctx, keep_alive=keep_alive)
