"""Ending a reply's reasoning when its budget runs out, by writing the close tag in the model's place."""

from __future__ import annotations

from collections import deque

from candor.engine.native_model import NativeModel
from candor.types import ThinkingBudget


class ThinkingCap:
    """Watches one reply's tokens; once `budget.tokens` of them are reasoning, queues the close tag."""

    def __init__(self, model: NativeModel, budget: ThinkingBudget) -> None:
        self._model = model
        self._budget = budget
        self._inside = budget.opened
        self._closed = False
        self._spent = 0
        self._tail = ""  # the latest text, long enough to find a tag split over tokens
        self.forced: deque[int] = deque()  # tokens to emit next instead of sampling
        self._check()  # a budget of 0 with the block already open: closed before the first token

    def saw(self, token: int) -> None:
        """Take one emitted token (sampled or forced)."""
        if self._closed:
            return
        piece = self._model.piece(token).decode("utf-8", errors="ignore")
        keep = max(len(self._budget.open), len(self._budget.close))
        self._tail = (self._tail + piece)[-2 * keep :]
        if not self._inside:
            if self._budget.open in self._tail:  # the token that opens the block is not reasoning
                self._inside = True
                self._tail = self._tail.split(self._budget.open, 1)[1]
                self._check()
            return
        if self._budget.close in self._tail:
            self._closed = True  # the model ended it in time
            return
        self._spent += 1
        self._check()

    def _check(self) -> None:
        if self._inside and self._spent >= self._budget.tokens:
            self._closed = True
            self.forced.extend(
                self._model.tokenize(self._budget.close, add_special=False, parse_special=True)
            )
