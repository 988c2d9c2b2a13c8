"""Request fields shared by both APIs: keep_alive durations, numeric bounds, log-probabilities."""

from __future__ import annotations

import math
import re
from typing import Any

from candor.errors import InvalidParameter

_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_CTX = 1 << 20


MAX_KEEP_ALIVE = 10 * 365 * 24 * 3600.0  # ten years; longer is "forever", which -1 says


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's keep_alive: "5m", "1h30m" is not accepted, a number of seconds, negative = forever."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidParameter("keep_alive must be a duration like '5m' or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise InvalidParameter(f"keep_alive {value!r} is not a duration; use e.g. '5m', '30s', 0 or -1")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if math.isnan(seconds) or seconds > MAX_KEEP_ALIVE:
        raise InvalidParameter(
            f"keep_alive must be at most {MAX_KEEP_ALIVE:.0f} seconds; "
            "use -1 to keep the model loaded forever"
        )
    return seconds


def check_options(options: dict[str, Any]) -> None:
    """Bounds the sampler does not know: num_predict is -1 or -2 (no limit), or 1 to MAX_CTX tokens."""
    value = options.get("num_predict")
    if isinstance(value, int) and not isinstance(value, bool) and (value > MAX_CTX or value < -2):
        raise InvalidParameter(
            f"num_predict must be -1 (no limit) or from 1 to {MAX_CTX}, as no reply outgrows its context; "
            f"got {value}"
        )


def context_option(options: dict[str, Any]) -> int | None:
    """`num_ctx` from options, bounded."""
    value = options.get("num_ctx")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CTX:
        raise InvalidParameter(f"num_ctx must be a whole number from 1 to {MAX_CTX}; got {value!r}")
    return value


def logprobs_option(enabled: bool | None, top: int | None) -> int | None:
    """SamplingParams.logprobs from a request's `logprobs` switch and `top_logprobs` count."""
    if not enabled:
        if top:
            raise InvalidParameter("top_logprobs needs logprobs: true; set both, or omit top_logprobs")
        return None
    return top or 0
