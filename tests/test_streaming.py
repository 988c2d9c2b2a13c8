"""How a streamed answer starts: with its first chunk, or with the error that came before any."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from candor.errors import ContextOverflow
from candor.scheduler import RequestHandle
from candor.server import streaming
from candor.server.streaming import ClientGone, opened
from candor.types import Chunk, FinishReason


class FakeRequest:
    """Stands in for Starlette's Request: only whether the client has hung up."""

    def __init__(self, gone: bool = False) -> None:
        self.gone = gone

    async def is_disconnected(self) -> bool:
        return self.gone


def test_a_stream_opens_with_its_first_chunk_and_yields_every_chunk_in_order() -> None:
    async def run() -> list[str]:
        handle = RequestHandle(1, "m", lambda _id: None)
        opening = asyncio.ensure_future(opened(handle, FakeRequest()))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert not opening.done()  # nothing to answer with yet
        handle.deliver(Chunk("a"))
        chunks = await opening
        handle.deliver(Chunk("b"))
        handle.deliver(Chunk("c", finish_reason=FinishReason.STOP))
        return [c.text async for c in chunks]

    assert "".join(asyncio.run(run())) == "abc"


def test_an_error_before_any_output_is_raised_by_the_opening_itself() -> None:
    async def run() -> None:
        handle = RequestHandle(1, "m", lambda _id: None)
        handle.deliver(ContextOverflow("the prompt is too long"))
        await opened(handle, FakeRequest())  # type: ignore[arg-type]

    with pytest.raises(ContextOverflow):
        asyncio.run(run())


def test_a_client_gone_before_the_first_chunk_cancels_its_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "DISCONNECT_POLL_SECONDS", 0.01)
    cancelled: list[int] = []

    async def run() -> None:
        handle = RequestHandle(7, "m", cancelled.append)  # a prompt still being read: no chunk comes
        await opened(handle, FakeRequest(gone=True))  # type: ignore[arg-type]

    with pytest.raises(ClientGone):
        asyncio.run(run())
    assert cancelled == [7]


def test_a_client_gone_as_the_first_chunk_arrives_cancels_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first chunk lands while the disconnect check runs: the generation is cancelled before
    # ClientGone propagates, not whenever the abandoned generator is collected.
    monkeypatch.setattr(streaming, "DISCONNECT_POLL_SECONDS", 0.01)
    cancelled: list[int] = []
    handle = RequestHandle(9, "m", cancelled.append)

    class GoneAsTheChunkComes(FakeRequest):
        async def is_disconnected(self) -> bool:
            handle.deliver(Chunk("late"))
            await asyncio.sleep(0.05)  # the stream takes the chunk: its first-chunk wait is over
            return True

    async def run() -> list[int]:
        try:
            await opened(handle, GoneAsTheChunkComes())  # type: ignore[arg-type]
        except ClientGone:
            return list(cancelled)  # before the event loop could finalize anything
        raise AssertionError("the hang-up was not noticed")

    assert asyncio.run(run()) == [9]


def test_a_slow_first_chunk_starts_the_stream_with_heartbeats_and_a_quick_error_keeps_its_status() -> None:
    async def slow() -> list[Chunk | None]:
        handle = RequestHandle(1, "m", lambda _id: None)
        request: Any = FakeRequest()
        asyncio.get_running_loop().call_later(0.35, handle.deliver, Chunk("a"))
        asyncio.get_running_loop().call_later(
            0.4, handle.deliver, Chunk("b", finish_reason=FinishReason.STOP)
        )
        chunks = await streaming.opened_or_waiting(handle, request, patience=0.05, beat=0.1)
        return [c async for c in chunks]

    items = asyncio.run(slow())
    assert [c.text for c in items if c is not None] == ["a", "b"]
    assert items[:2] == [None, None] and 2 <= items.count(None) <= 4  # a beat every 0.1 s while it waited

    async def quick_error() -> None:
        handle = RequestHandle(1, "m", lambda _id: None)
        asyncio.get_running_loop().call_later(0.01, handle.deliver, ContextOverflow("too long"))
        request: Any = FakeRequest()
        await streaming.opened_or_waiting(handle, request, patience=0.5, beat=0.1)

    with pytest.raises(ContextOverflow):  # within its patience: raised before the stream starts
        asyncio.run(quick_error())


def test_a_client_gone_while_the_stream_waits_cancels_its_generation() -> None:
    cancelled: list[int] = []

    async def run() -> None:
        handle = RequestHandle(7, "m", cancelled.append)  # a prompt still being read: no chunk comes
        request: Any = FakeRequest()
        chunks = await streaming.opened_or_waiting(handle, request, patience=0.01, beat=0.01)
        iterator = aiter(chunks)
        assert await anext(iterator) is None
        await iterator.aclose()  # type: ignore[attr-defined]  # what Starlette does when the client leaves

    asyncio.run(run())
    assert cancelled == [7]
