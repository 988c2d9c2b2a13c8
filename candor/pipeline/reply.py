"""A reply on its way: the runner's request handle, and the reader that turns its chunks into events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candor.pipeline.events import ReplyEvent
from candor.pipeline.reader import ReplyReader

if TYPE_CHECKING:  # the scheduler makes replies: importing it here would go round in a circle
    from candor.scheduler.handle import RequestHandle


@dataclass
class Reply:
    """Iterate it for events (blocking), or hand `handle` to an event loop and `reader` the chunks."""

    handle: RequestHandle
    reader: ReplyReader
    fallback_format: str | None = None  # the built-in chat format used for lack of the model's own

    def __iter__(self) -> Iterator[ReplyEvent]:
        for chunk in self.handle:
            yield self.reader.read(chunk)

    def cancel(self) -> None:
        """Stop the generation and free its slot."""
        self.handle.cancel()
