"""Ollama's wire format <-> candor's own: requests -> ReplyRequest; events, cards and store entries ->
the JSON Ollama's clients read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from candor.errors import InvalidParameter
from candor.identity import ModelCard
from candor.parameters import option_changes
from candor.pipeline import JSON_OBJECT, ReplyEvent, ReplyRequest, ResponseFormat
from candor.prompt.replies import ToolCall
from candor.server.ollama.protocol import ChatRequest, GenerateRequest
from candor.server.request_fields import check_options, context_option, logprobs_option
from candor.store.library import ModelDescription
from candor.types import Chunk, Embeddings, Message, TokenLogprob

NS = 1_000_000_000


def timestamp(when: datetime | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes created_at."""
    return (when or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")


# -- requests -------------------------------------------------------------------------------------------


def response_format(fmt: Any) -> ResponseFormat | None:
    """Ollama's `format`: "json" (any JSON object) or a JSON schema."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return ResponseFormat(JSON_OBJECT)
    if isinstance(fmt, dict):
        return ResponseFormat(fmt)
    raise InvalidParameter('format must be "json" or a JSON schema object')


def sampling(
    options: dict[str, Any], logprobs: bool, top_logprobs: int | None, fmt: Any = None
) -> dict[str, Any]:
    """`options` (Ollama's names) and the logprobs switches as SamplingParams fields; a `format` takes
    the place of any grammar in the options."""
    check_options(options)
    changes = option_changes(options)
    if fmt not in (None, ""):
        changes.pop("grammar", None)
    top = logprobs_option(logprobs, top_logprobs)
    if top is not None:
        changes["logprobs"] = top
    return changes


def generate_request(body: GenerateRequest, keep_alive: float | None) -> ReplyRequest:
    """/api/generate: the prompt through the chat template (a user turn after any system), or raw."""
    if body.raw and body.images:
        raise InvalidParameter("images need the model's chat template, which `raw` skips; omit one of them")
    if body.raw and body.think not in (None, False):
        raise InvalidParameter("`think` needs the model's chat template, which `raw` skips; omit one of them")
    common: dict[str, Any] = {
        "response_format": response_format(body.format),
        "sampling": sampling(body.options, body.logprobs, body.top_logprobs, body.format),
        "ctx": context_option(body.options),
        "keep_alive": keep_alive,
    }
    if body.raw:
        return ReplyRequest(body.model, prompt=body.prompt, **common)
    user = Message.coerce({"role": "user", "content": body.prompt, "images": body.images})
    messages = ([Message("system", body.system)] if body.system else []) + [user]
    return ReplyRequest(body.model, messages, think=body.think, **common)


def messages(body: ChatRequest) -> list[Message]:
    """/api/chat's messages: text, images (base64), tool calls and tool results."""
    return [
        Message.coerce(
            {
                "role": m.role,
                "content": m.content or "",
                "tool_calls": m.tool_calls,
                "tool_name": m.tool_name,
                "images": m.images,
            }
        )
        for m in body.messages
    ]


def chat_request(body: ChatRequest, keep_alive: float | None) -> ReplyRequest:
    """/api/chat: the conversation, its tools and thinking."""
    return ReplyRequest(
        body.model,
        messages(body),
        tools=body.tools,
        think=body.think,
        response_format=response_format(body.format),
        sampling=sampling(body.options, body.logprobs, body.top_logprobs, body.format),
        ctx=context_option(body.options),
        keep_alive=keep_alive,
    )


# -- replies --------------------------------------------------------------------------------------------


def metrics(last: Chunk | ReplyEvent) -> dict[str, Any]:
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


def _done(line: dict[str, Any], event: ReplyEvent) -> dict[str, Any]:
    if event.finish_reason is not None:
        line.update(done=True, done_reason=event.finish_reason.value, **metrics(event))
    return line


def generate_line(model: str, event: ReplyEvent, *, logprobs: bool) -> dict[str, Any]:
    """One /api/generate line: the answer in `response`, reasoning in `thinking`."""
    line: dict[str, Any] = {"model": model, "created_at": timestamp(), "response": event.text, "done": False}
    if event.thinking:
        line["thinking"] = event.thinking
    if logprobs:
        line["logprobs"] = logprobs_of(event.logprobs)
    return _done(line, event)


def chat_line(model: str, event: ReplyEvent, *, logprobs: bool) -> dict[str, Any]:
    """One /api/chat line: content, thinking and tool calls in `message`."""
    message: dict[str, Any] = {"role": "assistant", "content": event.text}
    if event.thinking:
        message["thinking"] = event.thinking
    if event.tool_calls:
        message["tool_calls"] = tool_calls(event.tool_calls)
    line: dict[str, Any] = {"model": model, "created_at": timestamp(), "message": message, "done": False}
    if logprobs:
        line["logprobs"] = logprobs_of(event.logprobs)
    return _done(line, event)


def tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Ollama's tool calls: arguments as an object."""
    return [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _token(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def logprobs_of(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
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


# -- models ---------------------------------------------------------------------------------------------


def _modified(iso: str) -> str:
    try:
        return timestamp(datetime.fromisoformat(iso).astimezone(timezone.utc))
    except ValueError:
        return iso


def listed_model(described: ModelDescription) -> dict[str, Any]:
    """One /api/tags entry: the store's facts, and the identity read from the file."""
    entry, card = described.entry, described.card
    assert entry is not None  # every listed model has a store entry
    item: dict[str, Any] = {
        "name": entry.name,
        "model": entry.name,
        "modified_at": _modified(entry.modified_at),
        "size": entry.size,
        "digest": entry.sha256 or "",
    }
    if card is not None:
        item["details"] = details(card)
        item["capabilities"] = capabilities(card, has_template=card.chat_template is not None)
    item["candor"] = {
        "identity": card.summary() if card else None,
        "usable": described.usable,
        "problem": described.problem,
        "name_claims": [c.message for c in described.name_claims],
    }
    return item


def shown_model(described: ModelDescription) -> dict[str, Any]:
    """/api/show: what the model is, its licence text, template and parameters."""
    card, fmt = described.readable()
    path, entry = described.path, described.entry
    return {
        "license": described.license_text(),
        "modelfile": f"# candor does not use Modelfiles; this model is {path}\nFROM {path}\n",
        "parameters": parameters(described.parameters, fmt.stop),
        "template": fmt.template,
        "system": (entry.system if entry else None) or "",
        "details": details(card),
        "model_info": model_info(card),
        "capabilities": capabilities(card, has_template=card.chat_template is not None),
        "modified_at": _modified(entry.modified_at) if entry else timestamp(),
        "candor": {
            "summary": card.summary(),
            "identity": card.lineage(),
            "chat_format": fmt.describe(),
            "chat_format_fallback": fmt.is_fallback,
            "chat_defaults": dict(fmt.options),  # what answers start from without a template of its own
            "name_claims": [c.message for c in described.name_claims],
            # what `candor licenses MODEL` shows besides the text (Ollama's `license` above)
            "license": {
                "metadata": card.license,
                "name": card.license_name,
                "link": card.license_link,
                "files": [str(p) for p in described.license_files],
            },
        },
    }


def loaded_model(info: Mapping[str, Any]) -> dict[str, Any]:
    """One /api/ps entry, from the scheduler's description of a loaded model."""
    expires = info["expires_at"]
    return {
        "name": info["name"],
        "model": info["name"],
        "size": info["size"],
        "digest": info["sha256"] or "",
        "details": details(info["card"]),  # as /api/tags describes the model
        "expires_at": timestamp(datetime.fromtimestamp(expires, timezone.utc))
        if expires
        else "0001-01-01T00:00:00Z",
        "size_vram": info["size_vram"],
        "context_length": info["context_length"],
        # candor's own: layers on the GPU and who chose them (the memory plan, or a setting), whether the
        # weights were read into memory or are mapped from the file, and whether llama.cpp's extra CPU
        # buffer types hold them (the CPU self-test decides)
        "gpu_layers": info["gpu_layers"],
        "placement": info["placement"],
        "weights": info["weights"],
        "cpu_buffers": info["cpu_buffers"],
    }
