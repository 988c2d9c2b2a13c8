"""llama-server's utility shapes <-> candor's own."""

from __future__ import annotations

from typing import Any

from candor.pipeline import Infill, ReplyEvent, ReplyRequest
from candor.server.llamacpp.protocol import ApplyTemplateRequest, InfillRequest, RerankRequest
from candor.types import Message, Ranking


def piece(token: int, data: bytes) -> dict[str, Any]:
    """A token and its piece: text, or the byte values when they are not whole UTF-8 (as llama-server)."""
    try:
        return {"id": token, "piece": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"id": token, "piece": list(data)}


def template_request(body: ApplyTemplateRequest) -> ReplyRequest:
    """The conversation whose prompt /apply-template shows (OpenAI-style messages)."""
    return ReplyRequest(body.model, [Message.coerce(m) for m in body.messages], tools=body.tools)


def infill_request(body: InfillRequest) -> ReplyRequest:
    """/infill: the gap between `input_prefix` and `input_suffix`, other files in `input_extra`."""
    values = {
        "max_tokens": body.n_predict,
        "temperature": body.temperature,
        "top_k": body.top_k,
        "top_p": body.top_p,
        "stop": tuple(body.stop) if body.stop else None,
    }
    extra = tuple((chunk.filename, chunk.text) for chunk in body.input_extra)
    return ReplyRequest(
        body.model,
        prompt=body.prompt,
        infill=Infill(body.input_prefix, body.input_suffix, extra),
        sampling={k: v for k, v in values.items() if v is not None},
    )


def rerank_response(body: RerankRequest, ranking: Ranking) -> dict[str, Any] | list[dict[str, Any]]:
    """llama-server's answer: Jina's shape (`results` of `index` and `relevance_score`, with `usage`), or
    with `texts` TEI's bare list of `index` and `score` (and `text` when asked); best first, top_n kept."""
    documents = body.candidates
    ranked = ranking.ranked(body.top_n)
    if body.is_tei:
        return [
            {"index": i, "score": score, **({"text": documents[i]} if body.return_text else {})}
            for i, score in ranked
        ]
    return {
        "model": body.model or "",
        "object": "list",
        "usage": {"prompt_tokens": ranking.prompt_tokens, "total_tokens": ranking.prompt_tokens},
        "results": [{"index": i, "relevance_score": score} for i, score in ranked],
    }


def completion(event: ReplyEvent, model: str) -> dict[str, Any]:
    """llama-server's completion object: `content`, whether it `stop`ped, and the token counts."""
    line: dict[str, Any] = {"content": event.text, "stop": event.last, "model": model}
    if event.last:
        usage = event.usage
        line.update(
            stop_type="limit" if event.finish_reason and event.finish_reason.value == "length" else "eos",
            tokens_predicted=usage.completion_tokens if usage else 0,
            tokens_evaluated=usage.prompt_tokens if usage else 0,
            tokens_cached=usage.cached_tokens if usage else 0,
        )
    return line
