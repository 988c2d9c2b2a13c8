"""One request pipeline under every API: a typed request goes in, typed events come out.

Each API dialect (server/ollama, server/openai) converts its wire format to a ReplyRequest and the
ReplyEvents back; rendering the prompt, choosing the grammar and reading the reply happen here, once.
"""

from __future__ import annotations

from candor.pipeline.events import ReplyEvent
from candor.pipeline.plan import ReplyPlan, plan_reply
from candor.pipeline.reader import ReplyReader
from candor.pipeline.reply import Reply
from candor.pipeline.request import JSON_OBJECT, Infill, ReplyRequest, ResponseFormat

__all__ = [
    "JSON_OBJECT",
    "Infill",
    "Reply",
    "ReplyEvent",
    "ReplyPlan",
    "ReplyReader",
    "ReplyRequest",
    "ResponseFormat",
    "plan_reply",
]
