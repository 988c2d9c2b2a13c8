"""A request in flight, as its caller sees it: iterate for chunks, cancel to stop."""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator

from candor.errors import CandorError
from candor.types import Chunk

_DONE = object()


class RequestHandle:
    """Chunks of one generation arrive here from the runner's reader thread."""

    def __init__(self, request_id: int, model: str, cancel: Callable[[int], None]) -> None:
        self.id = request_id
        self.model = model
        self._cancel = cancel
        self._queue: queue.SimpleQueue[Chunk | CandorError | object] = queue.SimpleQueue()
        self._listeners: list[Callable[[Chunk | CandorError | None], None]] = []
        self._lock = threading.Lock()
        self.finished = threading.Event()
        # Seconds this request waited for its model to load (Ollama's load_duration): set by the scheduler
        # before the handle is returned, added to the final chunk as the caller receives it.
        self.load_seconds = 0.0

    def _received(self, item: Chunk | CandorError) -> Chunk | CandorError:
        """An item as the caller sees it: the final chunk's timings include the wait for the model."""
        if isinstance(item, Chunk) and item.timings is not None and self.load_seconds:
            waited = item.timings.load_seconds + self.load_seconds
            return dataclasses.replace(item, timings=dataclasses.replace(item.timings, load_seconds=waited))
        return item

    # -- the runner side -----------------------------------------------------------------------------

    def deliver(self, item: Chunk | CandorError) -> None:
        """Called by the reader thread with each chunk, or the error that ends the request."""
        # Listeners are called under the lock, as add_listener replays the backlog under it: a new chunk
        # can never overtake an older one (listeners only hand the item to an event loop, which is quick).
        with self._lock:
            if not self._listeners:
                self._queue.put(item)
            for listener in self._listeners:
                listener(self._received(item))
        if isinstance(item, CandorError) or item.finish_reason is not None:
            self.finished.set()

    def add_listener(self, listener: Callable[[Chunk | CandorError | None], None]) -> None:
        """Send items to `listener` instead of the iterator (e.g. an asyncio loop); replays the backlog."""
        with self._lock:
            self._listeners.append(listener)
            backlog: list[Chunk | CandorError] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, (Chunk, CandorError)):
                    backlog.append(item)
            for item in backlog:
                listener(self._received(item))

    # -- the caller side -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks()

    def chunks(self, timeout: float | None = None) -> Iterator[Chunk]:
        """Yield chunks until the final one; raise the error that ended the request. Closing cancels."""
        completed = False
        try:
            while True:
                item = self._queue.get(timeout=timeout)
                if isinstance(item, (Chunk, CandorError)):
                    item = self._received(item)
                if isinstance(item, CandorError):
                    completed = True
                    raise item
                assert isinstance(item, Chunk)
                yield item
                if item.finish_reason is not None:
                    completed = True
                    return
        finally:
            if not completed:
                self.cancel()

    def cancel(self) -> None:
        """Stop the generation; its slot is freed at the runner's next look at its connection."""
        if not self.finished.is_set():
            self.finished.set()
            self._cancel(self.id)
