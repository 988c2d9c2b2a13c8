"""Find stop strings in streamed text without emitting them or anything after them."""

from __future__ import annotations

from collections.abc import Sequence

from candor.errors import InvalidParameter


class StopMatcher:
    """Cut a text stream at the first stop string, holding back text that may begin one.

    The first stop string to *complete* wins (the one ending earliest; of those ending together, the
    one starting earliest), so the output does not depend on how the text was split into pieces.
    Each push scans only the held-back tail plus the new text.
    """

    __slots__ = ("_held", "_stopped", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        if isinstance(stops, str):
            stops = (stops,)
        for stop in stops:
            if not isinstance(stop, str) or not stop:
                raise InvalidParameter(f"stop strings must be non-empty strings; got {stop!r}")
        self._stops = tuple(dict.fromkeys(stops))
        self._held = ""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """True once a stop string has been seen; later pushes emit nothing."""
        return self._stopped

    def push(self, text: str) -> tuple[str, bool]:
        """Take the next piece of text; return what is safe to emit now and whether a stop completed."""
        if self._stopped:
            return "", True
        if not self._stops:
            return text, False
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut >= 0:
            self._held = ""
            self._stopped = True
            return buffer[:cut], True
        keep = self._partial_len(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Return the held-back text at the end of generation (no stop string completed)."""
        held, self._held = self._held, ""
        return "" if self._stopped else held

    def _first_stop(self, buffer: str) -> int:
        """Return where the earliest-ending stop string in buffer starts, or -1."""
        best_end, best_start = -1, -1
        for stop in self._stops:
            start = buffer.find(stop)
            if start < 0:
                continue
            end = start + len(stop)
            if best_end < 0 or end < best_end or (end == best_end and start < best_start):
                best_end, best_start = end, start
        return best_start

    def _partial_len(self, buffer: str) -> int:
        """Return the length of the longest tail of buffer that some stop string starts with."""
        best = 0
        last = buffer[-1:] if buffer else ""
        for stop in self._stops:
            # Candidate lengths k end where the stop string has buffer's last character.
            k = min(len(stop) - 1, len(buffer))
            while k > best:
                k = stop.rfind(last, 0, k) + 1
                if k <= best:
                    break
                if buffer.endswith(stop[:k]):
                    best = k
                    break
                k -= 1
        return best
