"""Counters the scheduler keeps, ready for the server's /metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields


@dataclass
class Counters:
    """Totals since start (the server exposes them as Prometheus counters)."""

    requests: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    rejected_busy: int = 0
    prompt_tokens: int = 0
    prompt_tokens_cached: int = 0  # of those, served from a slot's KV (a reused prefix), not read again
    completion_tokens: int = 0
    time_to_first_token_seconds: float = 0.0  # summed over finished requests
    decode_seconds: float = 0.0
    loads: int = 0
    evictions: int = 0
    runner_crashes: int = 0


class Metrics:
    """Thread-safe counters plus the gauges computed from the loaded models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = Counters()

    def add(self, **amounts: float) -> None:
        """Increase counters by name."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self._counters, name, getattr(self._counters, name) + amount)

    def snapshot(self) -> dict[str, float]:
        """A copy of every counter."""
        with self._lock:
            return {f.name: getattr(self._counters, f.name) for f in fields(self._counters)}
