"""Bridge a scheduler RequestHandle (fed by a reader thread) into an asyncio stream of chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from candor.errors import CandorError
from candor.scheduler import RequestHandle
from candor.types import Chunk


async def chunks_of(handle: RequestHandle) -> AsyncIterator[Chunk]:
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
        first.tokens + second.tokens,
        second.finish_reason,
        second.usage,
        second.timings,
    )


async def collect(handle: RequestHandle) -> tuple[str, Chunk]:
    """The whole text and the final chunk (usage, timings, finish reason)."""
    parts: list[str] = []
    last: Chunk | None = None
    async for chunk in chunks_of(handle):
        parts.append(chunk.text)
        last = chunk
    assert last is not None
    return "".join(parts), last
