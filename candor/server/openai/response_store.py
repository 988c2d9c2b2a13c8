"""Responses kept for `previous_response_id` and `GET /v1/responses/{id}`: in memory, bounded by a count
and a byte cap (the least recently used go first), lost when the server stops."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from candor.errors import NotFound
from candor.types import Message


@dataclass(frozen=True)
class Stored:
    """One stored response: the object GET returns, and the conversation a follow-up continues."""

    response: dict[str, Any]
    conversation: tuple[Message, ...]
    size: int


class ResponseStore:
    """Thread-safe."""

    def __init__(self, max_count: int = 1000, max_bytes: int = 64 << 20) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, ident: str, response: dict[str, Any], conversation: list[Message]) -> None:
        """Keep a response, dropping the least recently used past the count or the byte cap."""
        size = len(json.dumps(response)) + sum(len(m.content) for m in conversation)
        with self._lock:
            self._items[ident] = Stored(response, tuple(conversation), size)
            self._bytes += size
            while self._items and (len(self._items) > self.max_count or self._bytes > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.size

    def get(self, ident: str) -> Stored:
        """A stored response (now the most recently used); NotFound says why one may be missing."""
        with self._lock:
            stored = self._items.get(ident)
            if stored is not None:
                self._items.move_to_end(ident)
                return stored
        raise NotFound(
            f"response {ident!r} is not stored: it is unknown, was deleted, was dropped to make room, or was "
            "made before the server restarted (responses are kept in memory); send the whole conversation"
        )

    def delete(self, ident: str) -> None:
        """Forget a response; NotFound when it is not stored."""
        with self._lock:
            stored = self._items.pop(ident, None)
            if stored is not None:
                self._bytes -= stored.size
                return
        raise NotFound(f"response {ident!r} is not stored")

    def __len__(self) -> int:
        return len(self._items)
