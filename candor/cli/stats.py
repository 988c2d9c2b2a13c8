"""The timing lines `--verbose` prints after an answer, in `ollama run --verbose`'s shape."""

from __future__ import annotations

from typing import TextIO

from candor.types import Chunk


def print_stats(last: Chunk, out: TextIO) -> None:
    """Print load time, prompt and decode token counts, durations and rates."""
    if last.usage is None or last.timings is None:
        return
    usage, t = last.usage, last.timings
    total = t.load_seconds + t.prompt_seconds + t.decode_seconds
    rows = [
        ("total duration", f"{total:.3f}s"),
        ("load duration", f"{t.load_seconds:.3f}s"),
        ("prompt eval count", f"{usage.prompt_tokens} token(s)"),
        ("prompt eval duration", f"{t.prompt_seconds:.3f}s"),
        ("prompt eval rate", f"{t.prompt_tokens_per_second(usage):.2f} tokens/s"),
        ("eval count", f"{usage.completion_tokens} token(s)"),
        ("eval duration", f"{t.decode_seconds:.3f}s"),
        ("eval rate", f"{t.decode_tokens_per_second(usage):.2f} tokens/s"),
        ("finish reason", last.finish_reason.value if last.finish_reason else "-"),
    ]
    for key, value in rows:
        print(f"{key + ':':<22}{value}", file=out)
