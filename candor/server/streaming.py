"""Bridge a scheduler RequestHandle (fed by a reader thread) into an asyncio stream of chunks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from candor.errors import CandorError
from candor.pipeline import ReplyEvent, ReplyReader
from candor.scheduler import RequestHandle
from candor.types import Chunk, TokenLogprob

T = TypeVar("T")


async def chunks_of(handle: RequestHandle) -> AsyncGenerator[Chunk, None]:
    """Yield the handle's chunks in the event loop; raise its error; cancel it if the consumer stops."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Chunk | CandorError | None] = asyncio.Queue()

    def deliver(item: Chunk | CandorError | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    handle.add_listener(deliver)
    finished = False
    try:
        while True:
            item = await queue.get()
            # Chunks that arrived together leave as one: fewer events to encode and send, which matters
            # when this process shares its cores with llama.cpp's threads.
            while isinstance(item, Chunk) and item.finish_reason is None and not queue.empty():
                following = queue.get_nowait()
                if not isinstance(following, Chunk):
                    yield item
                    item = following
                    break
                item = merged(item, following)
            if isinstance(item, CandorError):
                finished = True
                raise item
            if item is None:
                continue
            yield item
            if item.finish_reason is not None:
                finished = True
                return
    finally:
        if not finished:
            handle.cancel()  # the client went away: free the slot now


def merged(first: Chunk, second: Chunk) -> Chunk:
    """Two consecutive chunks as one (the second's finish reason, usage and timings)."""
    return Chunk(
        first.text + second.text,
        tokens=first.tokens + second.tokens,
        logprobs=first.logprobs + second.logprobs,
        finish_reason=second.finish_reason,
        usage=second.usage,
        timings=second.timings,
        stop=second.stop,
    )


@dataclass(frozen=True)
class Collected:
    """A whole generation: its text, its final chunk (finish reason, usage, timings), every logprob."""

    text: str
    last: Chunk
    logprobs: tuple[TokenLogprob, ...]


class ClientGone(Exception):
    """The client hung up before a whole answer (or a streamed one's first chunk) was ready; its generation
    was cancelled."""


async def opened(handle: RequestHandle, request: Request) -> AsyncIterator[Chunk]:
    """The handle's chunks, once its first one has come; raises the error that ends it before any output.

    A streamed answer starts (status line and headers) with its first chunk, as llama-server's does: an
    error before any output (a prompt too long for the context, a grammar llama.cpp refuses, a runner that
    died) gets its own status instead of a 200 followed by an error event. A queued request answers
    nothing until it has a slot. If the client hangs up before the first chunk, the generation is
    cancelled and ClientGone raised."""
    chunks = chunks_of(handle)
    try:
        first = await _unless_gone(asyncio.ensure_future(anext(chunks)), request)
    except ClientGone:
        await chunks.aclose()  # the first chunk may have come meanwhile: cancel now, not when collected
        raise
    return _after(first, chunks)


async def opened_or_waiting(
    handle: RequestHandle, request: Request, patience: float, beat: float
) -> AsyncIterator[Chunk | None]:
    """As opened(), for a first chunk that comes within `patience` seconds: an error before it still gets
    its own status. When reading the prompt takes longer (an agent's 20k tokens), the stream starts
    anyway and yields None every `beat` seconds until the first chunk, so that the client hears from the
    server (Anthropic's `ping`); an error after that can only be an event in the stream."""
    chunks = chunks_of(handle)
    first = asyncio.ensure_future(anext(chunks))
    try:
        await _unless_gone(asyncio.ensure_future(asyncio.wait({first}, timeout=patience)), request)
    except ClientGone:
        await _stop(first, chunks)
        raise
    if first.done():
        return _after(first.result(), chunks)
    return _waiting(first, chunks, beat)


async def _waiting(
    first: asyncio.Future[Chunk], rest: AsyncGenerator[Chunk, None], beat: float
) -> AsyncIterator[Chunk | None]:
    try:
        while True:
            done, _ = await asyncio.wait({first}, timeout=beat)
            if done:
                break
            yield None
        yield first.result()
        async for chunk in rest:
            yield chunk
    finally:
        await _stop(first, rest)  # a client that hangs up cancels the generation now


async def _stop(first: asyncio.Future[Chunk], rest: AsyncGenerator[Chunk, None]) -> None:
    """Cancel a generation whose first chunk may still be awaited (by `first`, inside `rest`)."""
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)  # the generator is left before it is closed
    await rest.aclose()


async def _after(first: Chunk, rest: AsyncGenerator[Chunk, None]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # a consumer that stops early cancels the generation now


async def collect(handle: RequestHandle, request: Request | None = None) -> Collected:
    """Read the handle to its end; if the client of `request` hangs up meanwhile, cancel the generation
    (freeing its slot at once) and raise ClientGone."""
    reading = asyncio.ensure_future(_read_all(handle))
    if request is None:
        return await reading
    return await _unless_gone(reading, request)


async def _unless_gone(work: asyncio.Future[T], request: Request) -> T:
    """The result of `work`; if the client of `request` hangs up first, cancel it and raise ClientGone."""
    while True:
        done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            return work.result()
        if await request.is_disconnected():
            work.cancel()  # chunks_of's cleanup cancels the handle
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise ClientGone


DISCONNECT_POLL_SECONDS = 0.25  # how soon a hung-up client's generation stops


async def _read_all(handle: RequestHandle) -> Collected:
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    last: Chunk | None = None
    async for chunk in chunks_of(handle):
        parts.append(chunk.text)
        logprobs.extend(chunk.logprobs)
        last = chunk
    assert last is not None
    return Collected("".join(parts), last, tuple(logprobs))


async def reply_events(chunks: AsyncIterator[Chunk], reader: ReplyReader) -> AsyncIterator[ReplyEvent]:
    """A streamed reply's chunks as events (reasoning, content and tool calls apart)."""
    async for chunk in chunks:
        yield reader.read(chunk)
