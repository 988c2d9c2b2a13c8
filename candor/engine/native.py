"""Process-wide llama.cpp state: backend initialisation and the log sink.

llama.cpp keeps one global backend and one global log callback per process, so this module is the one
place that owns them. Everything else in candor.engine goes through `ensure_backend()`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections import deque

import llama_cpp

logger = logging.getLogger("candor.llama_cpp")

_LOG_LEVEL_NAMES = {1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR"}


class LogSink:
    """Keeps llama.cpp's recent log lines (for error messages) and forwards them to `logging`."""

    def __init__(self, keep: int = 1000) -> None:
        self._lines: deque[tuple[int, str]] = deque(maxlen=keep)
        self._count = 0
        self._partial = ""
        self._lock = threading.Lock()
        # ctypes must keep the callback object alive for as long as llama.cpp may call it.
        self.callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
        if not text:
            return
        with self._lock:
            self._partial += text.decode("utf-8", errors="replace")
            if "\n" not in self._partial:
                return
            *complete, self._partial = self._partial.split("\n")
            for line in complete:
                if not line.strip():
                    continue
                logger.debug("[%s] %s", _LOG_LEVEL_NAMES.get(level, "LOG"), line)
                if level != 1:  # llama.cpp's debug lines (graph dumps) would push out what matters
                    self._count += 1
                    self._lines.append((self._count, line))

    def mark(self) -> int:
        """Return a position in the log; `since(mark)` later returns what was logged after it."""
        with self._lock:
            return self._count

    def since(self, mark: int) -> list[str]:
        """Lines logged after `mark` that are still kept."""
        with self._lock:
            return [line for number, line in self._lines if number > mark]

    def errors_since(self, mark: int) -> list[str]:
        """The lines after `mark` that read like failures, for an error message."""
        words = ("error", "failed", "unknown", "invalid", "unsupported", "not supported", "cannot")
        return [
            line.strip()
            for line in self.since(mark)
            # print_info's `key = value` dump says "unknown" for unset fields: that is no failure
            if any(w in line.lower() for w in words) and not line.startswith("print_info:")
        ]


@functools.cache
def ensure_backend() -> LogSink:
    """Initialise llama.cpp once per process and route its logs to candor's sink."""
    sink = LogSink()
    llama_cpp.llama_log_set(sink.callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    return sink
