"""Split a model's <think>...</think> reasoning from its answer, whole or while it streams."""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
# Any of these in a chat template means the model was trained to reason before answering.
THINKING_MARKERS = ("<think>", "enable_thinking", "reasoning_content")

_BEFORE, _INSIDE, _AFTER = "before", "inside", "after"


def template_thinks(chat_template: str | None) -> bool:
    """Say whether a chat template belongs to a model that writes <think> reasoning."""
    return bool(chat_template) and any(marker in (chat_template or "") for marker in THINKING_MARKERS)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of text that is a proper start of tag (held back until it resolves)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkingSplitter:
    """Route streamed text to thinking or content; one think block, tags may be split across pushes."""

    def __init__(self, open_tag: str = OPEN_TAG, close_tag: str = CLOSE_TAG, started: bool = False) -> None:
        """Start outside a think block, or inside one when the prompt already opened it (started)."""
        self._open = open_tag
        self._close = close_tag
        self._state = _INSIDE if started else _BEFORE
        self._pending = ""  # text that may be the start of a tag
        self._fresh = started  # drop whitespace at the start of the section just entered
        self.saw_thinking = started

    def push(self, text: str) -> tuple[str, str]:
        """Take the next piece of the reply; return the (thinking, content) text now certain."""
        self._pending += text
        thinking: list[str] = []
        content: list[str] = []
        while self._state != _AFTER:
            tag = self._open if self._state == _BEFORE else self._close
            at = self._pending.find(tag)
            if at < 0:
                keep = _partial_tag(self._pending, tag)
                if self._state == _INSIDE:  # reasoning's trailing whitespace goes only if more follows
                    sure = self._pending[: len(self._pending) - keep]
                    keep += len(sure) - len(sure.rstrip())
                self._emit(self._pending[: len(self._pending) - keep], thinking, content)
                self._pending = self._pending[len(self._pending) - keep :]
                return "".join(thinking), "".join(content)
            before = self._pending[:at]
            self._emit(before.rstrip() if self._state == _INSIDE else before, thinking, content)
            self._pending = self._pending[at + len(tag) :]
            self._state = _INSIDE if self._state == _BEFORE else _AFTER
            self._fresh = True
            self.saw_thinking = True
        self._emit(self._pending, thinking, content)
        self._pending = ""
        return "".join(thinking), "".join(content)

    def flush(self) -> tuple[str, str]:
        """Release what was held back at the end of the reply, as (thinking, content)."""
        thinking: list[str] = []
        content: list[str] = []
        self._emit(self._pending.rstrip() if self._state == _INSIDE else self._pending, thinking, content)
        self._pending = ""
        return "".join(thinking), "".join(content)

    def _emit(self, text: str, thinking: list[str], content: list[str]) -> None:
        if self._fresh:
            text = text.lstrip()
            self._fresh = not text
        if text:
            (thinking if self._state == _INSIDE else content).append(text)


def split_thinking(text: str, *, started: bool = False) -> tuple[str | None, str]:
    """Split a finished reply into (thinking or None, content).

    `started`: the prompt opened the block, so all of a reply cut off before `</think>` is reasoning.
    Otherwise a `</think>` with no `<think>` before it also means the prompt opened the block
    (DeepSeek-R1 distills).
    """
    close = text.find(CLOSE_TAG)
    opened = text.find(OPEN_TAG)
    splitter = ThinkingSplitter(started=started or (close >= 0 and (opened < 0 or close < opened)))
    pushed = splitter.push(text)
    flushed = splitter.flush()
    thinking = (pushed[0] + flushed[0]).strip()
    content = pushed[1] + flushed[1]
    if not splitter.saw_thinking:
        return None, content
    return thinking or None, content
