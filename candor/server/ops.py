"""Operations routes: Prometheus /metrics from the scheduler's counters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from candor.scheduler import Scheduler

router = APIRouter()

_HELP = {
    "requests": "generation requests admitted",
    "requests_failed": "requests that ended with an error",
    "requests_cancelled": "requests cancelled (client gone)",
    "rejected_busy": "requests refused because the queue was full",
    "prompt_tokens": "prompt tokens processed",
    "prompt_tokens_cached": "prompt tokens served from a cached prefix (not read again)",
    "completion_tokens": "tokens generated",
    "time_to_first_token_seconds": "summed time to first token",
    "decode_seconds": "summed decode time",
    "loads": "model loads",
    "evictions": "models evicted to make room",
    "runner_crashes": "runner processes that died",
}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> str:
    """Counters and gauges in Prometheus' text format."""
    sched: Scheduler = request.app.state.scheduler
    lines = []
    for name, value in sched.metrics.snapshot().items():
        metric = f"candor_{name}" if name.endswith("_seconds") else f"candor_{name}_total"
        lines += [f"# HELP {metric} {_HELP.get(name, name)}", f"# TYPE {metric} counter", f"{metric} {value}"]
    loaded = sched.loaded()
    active = sum(m["active_requests"] for m in loaded)
    slots = sum(m["parallel"] for m in loaded)
    gauges = {
        "candor_models_loaded": (len(loaded), "models loaded"),
        "candor_requests_active": (active, "requests in flight"),
        "candor_slots_busy": (
            sum(min(m["active_requests"], m["parallel"]) for m in loaded),
            "slots decoding",
        ),
        "candor_queue_depth": (
            sum(max(0, m["active_requests"] - m["parallel"]) for m in loaded),
            "requests waiting",
        ),
        "candor_slots_total": (slots, "slots of the loaded models"),
    }
    for metric, (value, text) in gauges.items():
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge", f"{metric} {value}"]
    return "\n".join(lines) + "\n"
