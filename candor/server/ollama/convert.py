"""candor's chunks, cards and store entries -> the JSON Ollama's clients read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from candor.identity import ModelCard
from candor.types import Chunk, Embeddings, TokenLogprob

NS = 1_000_000_000


def timestamp(when: datetime | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes created_at."""
    return (when or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")


def metrics(last: Chunk) -> dict[str, Any]:
    """The final chunk's counters, durations in nanoseconds."""
    usage, t = last.usage, last.timings
    if usage is None or t is None:
        return {}
    return {
        "total_duration": int((t.load_seconds + t.prompt_seconds + t.decode_seconds) * NS),
        "load_duration": int(t.load_seconds * NS),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": int(t.prompt_seconds * NS),
        "eval_count": usage.completion_tokens,
        "eval_duration": int(t.decode_seconds * NS),
    }


def embed_metrics(result: Embeddings) -> dict[str, Any]:
    """/api/embed's counters: durations in nanoseconds, the tokens read over every input."""
    return {
        "total_duration": int(result.total_seconds * NS),
        "load_duration": int(result.load_seconds * NS),
        "prompt_eval_count": result.prompt_tokens,
    }


def generate_chunk(model: str, chunk: Chunk) -> dict[str, Any]:
    """One /api/generate line."""
    line: dict[str, Any] = {"model": model, "created_at": timestamp(), "response": chunk.text, "done": False}
    if chunk.finish_reason is not None:
        line.update(done=True, done_reason=chunk.finish_reason.value, **metrics(chunk))
    return line


def chat_chunk(model: str, chunk: Chunk) -> dict[str, Any]:
    """One /api/chat line."""
    line: dict[str, Any] = {
        "model": model,
        "created_at": timestamp(),
        "message": {"role": "assistant", "content": chunk.text},
        "done": False,
    }
    if chunk.finish_reason is not None:
        line.update(done=True, done_reason=chunk.finish_reason.value, **metrics(chunk))
    return line


def _token(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def logprobs(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Ollama's `logprobs`: each token with its log-probability and the most likely alternatives."""
    return [
        {**_token(e.piece, e.logprob), "top_logprobs": [_token(piece, lp) for piece, lp in e.top]}
        for e in entries
    ]


def family(card: ModelCard) -> str:
    """The model family Ollama shows: the architecture."""
    return card.architecture or "unknown"


def details(card: ModelCard) -> dict[str, Any]:
    """Ollama's `details` object, from the file's own metadata."""
    return {
        "parent_model": "; ".join(b.label() for b in card.base_models),
        "format": "gguf",
        "family": family(card),
        "families": [family(card)],
        "parameter_size": card.parameter_label,
        "quantization_level": card.file_type,
    }


def capabilities(card: ModelCard, *, has_template: bool) -> list[str]:
    """What the model can be asked for (embeddings: every model, through mean pooling)."""
    caps = ["completion", "embedding"]
    del has_template
    return caps


def model_info(card: ModelCard) -> dict[str, Any]:
    """GGUF keys for /api/show (big arrays are summarised by candor's reader)."""
    info = dict(card.metadata)
    info["general.parameter_count"] = card.parameter_count
    return info


def parameters(options: Mapping[str, Any], stop: Sequence[str] = ()) -> str:
    """/api/show's `parameters`: one `name value` line each (strings quoted, one line per stop string);
    `stop` comes first (the chat format's), then any in `options`."""
    extra = options.get("stop") or ()
    stops = [*stop, *([extra] if isinstance(extra, str) else extra)]
    rows = [("stop", value) for value in dict.fromkeys(stops)]
    rows += [(name, value) for name, value in options.items() if name != "stop"]
    return "\n".join(
        f"{name} {json.dumps(value) if isinstance(value, str) else value}" for name, value in rows
    )
