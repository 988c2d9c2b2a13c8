"""Anthropic's wire format <-> candor's own: Messages requests -> ReplyRequest; events -> messages and
the stream of server-sent events the `anthropic` SDK reassembles. Ids like msg_... are made here."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from candor.errors import InvalidParameter
from candor.pipeline import ReplyEvent, ReplyRequest, ResponseFormat
from candor.server.anthropic.protocol import AnthropicMessage, CountTokensRequest, MessagesRequest
from candor.types import FinishReason, Message, ToolCallRequest, Usage

# -- requests -------------------------------------------------------------------------------------------


def messages(body: CountTokensRequest) -> list[Message]:
    """The conversation: `system`, then each message's blocks as candor's turns. A user message's
    `tool_result` blocks become tool turns (named after the `tool_use` they answer); thinking blocks sent
    back by the client are dropped, as the chat templates drop past reasoning."""
    turns = [Message("system", _system(body.system))] if body.system else []
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results that answer them
    for message in body.messages:
        turns.extend(_turns(message, names))
    return turns


def _system(system: str | list[dict[str, Any]]) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(str(b.get("text", "")) for b in system if b.get("type") == "text")


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _turns(message: AnthropicMessage, names: dict[str, str]) -> list[Message]:
    text: list[str] = []
    images: list[str] = []
    calls: list[ToolCallRequest] = []
    results: list[Message] = []
    for block in _blocks(message.content):
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "image":
            images.append(_image(block.get("source")))
        elif kind == "tool_use":
            name, ident = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(ident, str):
                raise InvalidParameter("a tool_use block needs a string `id` and `name`")
            arguments = block.get("input") or {}
            if not isinstance(arguments, dict):
                raise InvalidParameter(f"tool_use {ident!r}: `input` must be a JSON object")
            names[ident] = name
            calls.append(ToolCallRequest(name, arguments, ident))
        elif kind == "tool_result":
            results.append(_tool_result(block, names))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise InvalidParameter(
                f"content blocks of type {kind!r} are not supported; "
                "send text, image, tool_use or tool_result blocks"
            )
    turns = results
    if text or calls or images or not results:
        turn = {"role": message.role, "content": "\n".join(text), "images": images}
        turns = [*turns, Message.coerce(turn)]
        if calls:
            turns[-1] = Message(message.role, turns[-1].content, tuple(calls), images=turns[-1].images)
    return turns


def _tool_result(block: dict[str, Any], names: dict[str, str]) -> Message:
    ident = block.get("tool_use_id")
    content = block.get("content") or ""
    if isinstance(content, list):
        content = "\n".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
    if not isinstance(content, str):
        raise InvalidParameter("a tool_result's content must be a string or text blocks")
    if block.get("is_error"):
        content = f"Error: {content}"
    return Message("tool", content, name=names.get(ident) if isinstance(ident, str) else None)


def _image(source: Any) -> str:
    if (
        not isinstance(source, dict)
        or source.get("type") != "base64"
        or not isinstance(source.get("data"), str)
    ):
        raise InvalidParameter(
            "an image block needs a base64 source ({'type': 'base64', 'media_type': ..., 'data': ...}); "
            "candor does not fetch images from the network"
        )
    return str(source["data"])


def _tools(body: CountTokensRequest) -> list[dict[str, Any]] | None:
    if not body.tools:
        return None
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema},
        }
        for t in body.tools
    ]


def _tool_choice(choice: dict[str, Any] | None) -> Any:
    """Anthropic's tool_choice as the pipeline's: auto, any (a call is required), tool (that one), none."""
    if choice is None:
        return "auto"
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidParameter("tool_choice must be {'type': 'auto'}, 'any', 'none', or 'tool' with a name")


def _think(thinking: dict[str, Any] | None) -> bool | None:
    """`enabled` (and types the SDK knows, such as `adaptive`) turn thinking on, `disabled` off."""
    if thinking is None:
        return None
    return thinking.get("type") != "disabled"


def count_request(body: CountTokensRequest) -> ReplyRequest:
    """/v1/messages/count_tokens: the request whose prompt is counted."""
    return ReplyRequest(
        body.model,
        messages(body),
        tools=_tools(body),
        tool_choice=_tool_choice(body.tool_choice),
        think=_think(body.thinking),
    )


def messages_request(body: MessagesRequest) -> ReplyRequest:
    """/v1/messages: the conversation, tools and tool choice, thinking, and sampling."""
    values = {
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "stop": tuple(body.stop_sequences) if body.stop_sequences else None,
        "grammar": body.grammar if _output_format(body.output_config) is None else None,
    }
    sampling = {k: v for k, v in values.items() if v is not None}
    return replace(
        count_request(body),
        response_format=_output_format(body.output_config),
        sampling=sampling,
        thinking_budget=_budget(body.thinking),
    )


def _budget(thinking: dict[str, Any] | None) -> int | None:
    """`budget_tokens` of enabled thinking: the most reasoning tokens before the answer must start."""
    budget = (thinking or {}).get("budget_tokens")
    if budget is None or (thinking or {}).get("type") == "disabled":
        return None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise InvalidParameter(f"thinking.budget_tokens must be a whole number of tokens; got {budget!r}")
    return budget


def _output_format(config: dict[str, Any] | None) -> ResponseFormat | None:
    """Structured output: `output_config.format`, a JSON schema the reply must match."""
    spec = (config or {}).get("format")
    if spec is None:
        return None
    if (
        not isinstance(spec, dict)
        or spec.get("type") != "json_schema"
        or not isinstance(spec.get("schema"), dict)
    ):
        raise InvalidParameter("output_config.format must be {'type': 'json_schema', 'schema': {...}}")
    return ResponseFormat(spec["schema"])


# -- replies --------------------------------------------------------------------------------------------


def new_id() -> str:
    """An Anthropic-style message id."""
    return f"msg_{secrets.token_hex(12)}"


def usage(u: Usage | None) -> dict[str, int]:
    """Token counts; `cache_read_input_tokens` are the prompt tokens the prefix cache supplied (of the
    `input_tokens`, which count the whole prompt, as count_tokens does)."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(event: ReplyEvent, stops: Sequence[str]) -> tuple[str, str | None]:
    """Anthropic's stop_reason, and the stop sequence that ended the reply (one the request gave)."""
    if event.tool_calls:
        return "tool_use", None
    if event.finish_reason is FinishReason.LENGTH:
        return "max_tokens", None
    if event.stop is not None and event.stop in stops:
        return "stop_sequence", event.stop
    return "end_turn", None


def tool_use(call: Any) -> dict[str, Any]:
    """A tool call as a tool_use block."""
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def message(ident: str, model: str, event: ReplyEvent, stops: Sequence[str]) -> dict[str, Any]:
    """A whole message: thinking, then text, then tool_use blocks."""
    content: list[dict[str, Any]] = []
    if event.thinking:
        content.append({"type": "thinking", "thinking": event.thinking, "signature": ""})
    if event.text or not (event.tool_calls or event.thinking):  # a reply cut off while it thinks has none
        content.append({"type": "text", "text": event.text})
    content += [tool_use(c) for c in event.tool_calls]
    reason, sequence = stop_reason(event, stops)
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(event.usage),
    }


def sse(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event, named as Anthropic names them."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


@dataclass
class MessageStream:
    """Writes one streamed message: message_start, content blocks (start, deltas, stop) as the reply's
    thinking and text come, tool_use blocks at the end, message_delta and message_stop."""

    ident: str
    model: str
    stops: Sequence[str]
    _index: int = -1
    _open: str | None = None  # the kind of the block being written
    _out: list[bytes] = field(default_factory=list)

    def start(self) -> bytes:
        """message_start, and a ping (as Anthropic sends one)."""
        shell: dict[str, Any] = {
            "id": self.ident,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"message": shell}) + sse("ping", {})

    def ping(self) -> bytes:
        """A ping, while the prompt is still being read."""
        return sse("ping", {})

    def events(self, event: ReplyEvent) -> bytes:
        """The SSE events for the next part of the reply."""
        out: list[bytes] = []
        if event.thinking:
            self._block(out, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": event.thinking}))
        if event.text:
            self._block(out, "text", {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": event.text}))
        if not event.last:
            return b"".join(out)
        if self._index < 0 and not event.tool_calls:
            self._block(out, "text", {"type": "text", "text": ""})  # an empty answer is one empty text block
        for call in event.tool_calls:
            self._block(out, "tool_use", {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            partial = json.dumps(call.arguments)
            out.append(self._delta({"type": "input_json_delta", "partial_json": partial}))
            self._close(out)
        self._close(out)
        reason, sequence = stop_reason(event, self.stops)
        counts = usage(event.usage)
        out.append(
            sse(
                "message_delta",
                {"delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": counts},
            )
        )
        out.append(sse("message_stop", {}))
        return b"".join(out)

    def _block(self, out: list[bytes], kind: str, block: dict[str, Any]) -> None:
        if self._open == kind and kind != "tool_use":
            return
        self._close(out)
        self._index += 1
        self._open = kind
        out.append(sse("content_block_start", {"index": self._index, "content_block": block}))

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"index": self._index, "delta": delta})

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        if self._open == "thinking":  # the SDK expects a signature before a thinking block closes
            out.append(self._delta({"type": "signature_delta", "signature": ""}))
        out.append(sse("content_block_stop", {"index": self._index}))
        self._open = None
