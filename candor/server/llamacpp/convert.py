"""llama-server's utility shapes <-> candor's own."""

from __future__ import annotations

from typing import Any

from candor.pipeline import ReplyRequest
from candor.server.llamacpp.protocol import ApplyTemplateRequest
from candor.types import Message


def piece(token: int, data: bytes) -> dict[str, Any]:
    """A token and its piece: text, or the byte values when they are not whole UTF-8 (as llama-server)."""
    try:
        return {"id": token, "piece": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"id": token, "piece": list(data)}


def template_request(body: ApplyTemplateRequest) -> ReplyRequest:
    """The conversation whose prompt /apply-template shows (OpenAI-style messages)."""
    return ReplyRequest(body.model, [Message.coerce(m) for m in body.messages], tools=body.tools)
