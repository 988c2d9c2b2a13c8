"""Request fields shared by both APIs: keep_alive durations and numeric bounds."""

from __future__ import annotations

import re
from typing import Any

from candor.errors import InvalidParameter

_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_CTX = 1 << 20


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's keep_alive: "5m", "1h30m" is not accepted, a number of seconds, negative = forever."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidParameter("keep_alive must be a duration like '5m' or a number of seconds")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise InvalidParameter(f"keep_alive {value!r} is not a duration; use e.g. '5m', '30s', 0 or -1")
    return float(match.group(1)) * _UNIT[match.group(2)]


def context_option(options: dict[str, Any]) -> int | None:
    """`num_ctx` from options, bounded."""
    value = options.get("num_ctx")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CTX:
        raise InvalidParameter(f"num_ctx must be a whole number from 1 to {MAX_CTX}; got {value!r}")
    return value
