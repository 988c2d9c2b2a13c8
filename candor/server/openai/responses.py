"""OpenAI's Responses API <-> candor's own: input items -> ReplyRequest; events -> output items, a response
object, and the stream of typed events the `openai` SDK reads. Ids like resp_... are made here."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from candor.errors import InvalidParameter
from candor.pipeline import JSON_OBJECT, ReplyEvent, ReplyRequest, ResponseFormat
from candor.server.openai.protocol import ResponsesRequest
from candor.types import FinishReason, Message, ToolCallRequest, Usage, image_bytes

logger = logging.getLogger(__name__)
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def new_id(prefix: str) -> str:
    """A Responses-style id: resp_, msg_, rs_, fc_."""
    return f"{prefix}_{secrets.token_hex(12)}"


# -- requests -------------------------------------------------------------------------------------------


def turns(body: ResponsesRequest) -> list[Message]:
    """The new turns a request adds: `instructions` as the system turn, then the input items. Reasoning
    items sent back (with their encrypted content) are dropped, as chat templates drop past reasoning."""
    out = [Message("system", body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*out, Message("user", body.input)]
    names: dict[str, str] = {}  # call_id -> function name, for the outputs that answer them
    for item in body.input:
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item))
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise InvalidParameter("a function_call item needs a string `call_id` and `name`")
            names[call_id] = name
            call = {"id": call_id, "function": {"name": name, "arguments": item.get("arguments") or "{}"}}
            out.append(Message.coerce({"role": "assistant", "content": "", "tool_calls": [call]}))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            out.append(Message("tool", text, name=names.get(str(item.get("call_id")))))
        elif kind == "reasoning":
            continue
        else:
            raise InvalidParameter(
                f"input items of type {kind!r} are not supported; send message, function_call, "
                "function_call_output or reasoning items"
            )
    return out


def _message(item: dict[str, Any]) -> Message:
    role = ROLES.get(str(item.get("role")))
    if role is None:
        raise InvalidParameter(
            f"a message's role must be user, assistant, system or developer; got {item.get('role')!r}"
        )
    content = item.get("content")
    if isinstance(content, str):
        return Message(role, content)
    text: list[str] = []
    images: list[bytes] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text.append(str(part.get("text", "")))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
                raise InvalidParameter(
                    "input_image must carry a data: URL with base64 content; candor does not fetch images"
                )
            images.append(image_bytes(url.split(";base64,", 1)[1]))
        else:
            raise InvalidParameter(f"content parts of type {kind!r} are not supported; send input_text")
    return Message(role, "".join(text), images=tuple(images))


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Flat function tools in the pipeline's shape; other tool types (Codex sends some) are skipped, as
    llama-server skips them."""
    functions = []
    for tool in tools or []:
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            logger.warning("skipping a tool of type %r: only function tools run locally", tool.get("type"))
            continue
        spec = {"name": tool["name"], "description": tool.get("description") or ""}
        spec["parameters"] = tool.get("parameters") or {"type": "object"}
        functions.append({"type": "function", "function": spec})
    return functions or None


def _tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice or "auto"
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidParameter(
        "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}"
    )


def _format(text: dict[str, Any] | None) -> ResponseFormat | None:
    spec = (text or {}).get("format")
    if not spec or spec.get("type") in (None, "text"):
        return None
    if spec.get("type") == "json_object":
        return ResponseFormat(JSON_OBJECT)
    if spec.get("type") == "json_schema" and isinstance(spec.get("schema"), dict):
        return ResponseFormat(spec["schema"])
    raise InvalidParameter("text.format must be text, json_object, or json_schema with a schema")


def _think(reasoning: dict[str, Any] | None) -> bool | None:
    """`effort` none or minimal turns thinking off; any other effort on."""
    effort = (reasoning or {}).get("effort")
    return None if effort is None else effort not in ("none", "minimal")


def reply_request(body: ResponsesRequest, history: Sequence[Message]) -> ReplyRequest:
    """The request, after the conversation a previous response left (`history`)."""
    values = {
        "max_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "grammar": body.grammar if _format(body.text) is None else None,
    }
    return ReplyRequest(
        body.model,
        [*history, *turns(body)],
        tools=_tools(body.tools),
        tool_choice=_tool_choice(body.tool_choice),
        response_format=_format(body.text),
        think=_think(body.reasoning),
        sampling={k: v for k, v in values.items() if v is not None},
    )


# -- replies --------------------------------------------------------------------------------------------


def usage(u: Usage | None) -> dict[str, Any]:
    """Token counts, with the prompt tokens the prefix cache supplied."""
    prompt, completion, cached = (u.prompt_tokens, u.completion_tokens, u.cached_tokens) if u else (0, 0, 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def reasoning_item(ident: str, text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": ident,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": ident, "status": status, "role": "assistant", "content": content}


def call_item(ident: str, call: Any, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": ident,
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


def output(event: ReplyEvent) -> list[dict[str, Any]]:
    """A whole reply's output items: reasoning, the message, one function_call per tool call."""
    items = [reasoning_item(new_id("rs"), event.thinking)] if event.thinking else []
    if event.text or not event.tool_calls:
        items.append(message_item(new_id("msg"), event.text))
    items += [call_item(new_id("fc"), c, json.dumps(c.arguments)) for c in event.tool_calls]
    return items


@dataclass
class Shell:
    """What every response object of one request carries besides its output."""

    ident: str
    body: ResponsesRequest
    created: int = field(default_factory=lambda: int(time.time()))

    def response(
        self, status: str, items: list[dict[str, Any]], event: ReplyEvent | None = None
    ) -> dict[str, Any]:
        body = self.body
        incomplete = event is not None and event.finish_reason is FinishReason.LENGTH and not event.tool_calls
        return {
            "id": self.ident,
            "object": "response",
            "created_at": self.created,
            "status": "incomplete" if incomplete else status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "model": body.model,
            "output": items,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "parallel_tool_calls": True,
            "previous_response_id": body.previous_response_id,
            "reasoning": body.reasoning,
            "store": body.store,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "text": body.text or {"format": {"type": "text"}},
            "tool_choice": body.tool_choice or "auto",
            "tools": body.tools or [],
            "usage": usage(event.usage) if event is not None else None,
            "metadata": {},
        }


@dataclass
class ResponseStream:
    """Writes one streamed response as the SDK reads it: created, in_progress, each output item added,
    its parts and deltas, done, and completed (or incomplete) at the end; every event numbered."""

    shell: Shell
    items: list[dict[str, Any]] = field(default_factory=list)
    _sequence: int = 0
    _open: dict[str, Any] | None = None  # the item being written: reasoning or message
    _text: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None  # the whole response, once it is complete

    def _event(self, kind: str, **payload: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **payload}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    def start(self) -> bytes:
        started = self.shell.response("in_progress", [])
        return self._event("response.created", response=started) + self._event(
            "response.in_progress", response=started
        )

    def events(self, event: ReplyEvent) -> bytes:
        out: list[bytes] = []
        if event.thinking:
            self._item(out, "reasoning")
            out.append(self._delta("response.reasoning_text.delta", event.thinking))
        if event.text:
            self._item(out, "message")
            out.append(self._delta("response.output_text.delta", event.text, logprobs=[]))
        if not event.last:
            return b"".join(out)
        if not self.items and self._open is None and not event.tool_calls:
            self._item(out, "message")  # an empty answer is one empty message
        self._close(out)
        for call in event.tool_calls:
            item = call_item(new_id("fc"), call, "", "in_progress")
            index = len(self.items)
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            arguments = json.dumps(call.arguments)
            common = {"item_id": item["id"], "output_index": index}
            out.append(self._event("response.function_call_arguments.delta", delta=arguments, **common))
            out.append(self._event("response.function_call_arguments.done", arguments=arguments, **common))
            done = {**item, "arguments": arguments, "status": "completed"}
            self.items.append(done)
            out.append(self._event("response.output_item.done", output_index=index, item=done))
        final = self.shell.response("completed", self.items, event)
        self.final = final
        out.append(self._event(f"response.{final['status']}", response=final))
        return b"".join(out)

    def _delta(self, kind: str, text: str, **extra: Any) -> bytes:
        assert self._open is not None
        self._text.append(text)
        where = {"item_id": self._open["id"], "output_index": len(self.items), "content_index": 0}
        return self._event(kind, delta=text, **where, **extra)

    def _item(self, out: list[bytes], kind: str) -> None:
        if self._open is not None and self._open["type"] == kind:
            return
        self._close(out)
        index = len(self.items)
        if kind == "reasoning":
            self._open = {"type": "reasoning", "id": new_id("rs"), "summary": [], "content": []}
            out.append(self._event("response.output_item.added", output_index=index, item=self._open))
            return
        self._open = message_item(new_id("msg"), "", "in_progress")
        out.append(self._event("response.output_item.added", output_index=index, item=self._open))
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": self._open["id"], "output_index": index, "content_index": 0}
        out.append(self._event("response.content_part.added", part=part, **where))

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        text, self._text = "".join(self._text), []
        index = len(self.items)
        where = {"item_id": self._open["id"], "output_index": index, "content_index": 0}
        if self._open["type"] == "reasoning":
            out.append(self._event("response.reasoning_text.done", text=text, **where))
            item = reasoning_item(self._open["id"], text)
        else:
            part = {"type": "output_text", "text": text, "annotations": []}
            out.append(self._event("response.output_text.done", text=text, logprobs=[], **where))
            out.append(self._event("response.content_part.done", part=part, **where))
            item = message_item(self._open["id"], text)
        self.items.append(item)
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._open = None


def conversation(request: ReplyRequest, event: ReplyEvent) -> list[Message]:
    """The conversation after a response, for `previous_response_id`: the request's turns and the answer
    (its tool calls included; its reasoning dropped, as templates drop past reasoning)."""
    calls = tuple(ToolCallRequest(c.name, c.arguments, c.id) for c in event.tool_calls)
    return [*request.messages, Message("assistant", event.text, calls)]
