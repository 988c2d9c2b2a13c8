"""Find stop strings in streamed text without emitting them or anything after them."""

from __future__ import annotations

from collections.abc import Sequence

from candor.errors import InvalidParameter


class GluedStop(str):
    """A stop string that counts only glued to a word (right after a letter) or at the start of a line, and
    cuts that word, with the spaces before it, too. A base model that cannot write its turn marker writes
    a stray word in its place, then the marker's role line: "...blue? mendatanguser\n" ends at "blue?"."""

    __slots__ = ()


class StopMatcher:
    """Cut a text stream at the first stop string, holding back text that may begin one.

    The first stop string to *complete* wins (the one ending earliest; of those ending together, the
    one starting earliest), so the output does not depend on how the text was split into pieces.
    Each push scans only the held-back tail plus the new text.
    """

    __slots__ = ("_before", "_glued", "_held", "_stopped", "_stops", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        if isinstance(stops, str):
            stops = (stops,)
        for stop in stops:
            if not isinstance(stop, str) or not stop:
                raise InvalidParameter(f"stop strings must be non-empty strings; got {stop!r}")
        plain = {stop for stop in stops if not isinstance(stop, GluedStop)}  # each subsumes its glued twin
        self._stops = tuple(dict.fromkeys(s for s in stops if not (isinstance(s, GluedStop) and s in plain)))
        self._glued = any(isinstance(stop, GluedStop) for stop in self._stops)
        self._held = ""
        self._before = ""  # the last character emitted, which a GluedStop at the buffer's start follows
        self._stopped = False
        self.matched: str | None = None  # the stop string that ended the text

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
        cut, self.matched = self._first_stop(buffer)
        if cut >= 0:
            self._held = ""
            self._stopped = True
            return buffer[:cut], True
        keep = self._partial_len(buffer)
        if self._glued:  # the word before may turn out to be a stray one that a GluedStop cuts
            keep += _word_len(buffer[: len(buffer) - keep])
        self._held = buffer[len(buffer) - keep :]
        out = buffer[: len(buffer) - keep]
        self._before = out[-1:] or self._before
        return out, False

    def flush(self) -> str:
        """Return the held-back text at the end of generation (no stop string completed)."""
        held, self._held = self._held, ""
        return "" if self._stopped else held

    def _first_stop(self, buffer: str) -> tuple[int, str | None]:
        """Return where the output ends for the earliest-ending stop string in buffer, and that string;
        -1 and None when none is there."""
        best_end, best_start, best_cut = -1, -1, -1
        best: str | None = None
        for stop in self._stops:
            start = self._find(stop, buffer)
            if start < 0:
                continue
            end = start + len(stop)
            if best_end < 0 or end < best_end or (end == best_end and start < best_start):
                glued = isinstance(stop, GluedStop)
                best_end, best_start, best = end, start, str(stop)
                best_cut = start - _word_len(buffer[:start]) if glued else start
        return best_cut, best

    def _find(self, stop: str, buffer: str) -> int:
        """Where `stop` first counts in buffer, or -1 (a GluedStop only after a letter or a line break)."""
        start = buffer.find(stop)
        if isinstance(stop, GluedStop):
            while start >= 0 and not _glues(buffer[start - 1] if start else self._before):
                start = buffer.find(stop, start + 1)
        return start

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


def _glues(before: str) -> bool:
    """Whether a GluedStop counts after this character ("": the start of the text)."""
    return before in ("", "\n") or before.isalpha()


def _word_len(text: str) -> int:
    """The length of text's last word (letters) and the spaces or tabs before it."""
    end = len(text)
    while end and text[end - 1].isalpha():
        end -= 1
    while end and text[end - 1] in " \t":
        end -= 1
    return len(text) - end
