"""Which reply format a model uses, chosen by markers its chat template contains."""

from __future__ import annotations

from candor.prompt.replies.base import ReplyFormat
from candor.prompt.replies.generic import GenericFormat
from candor.prompt.replies.hermes import HermesFormat
from candor.prompt.replies.llama3 import Llama3Format
from candor.prompt.replies.mistral import MistralFormat

GENERIC: ReplyFormat = GenericFormat()
# First row whose marker appears in the template wins; no marker means the generic format.
FORMATS: tuple[tuple[str, ReplyFormat], ...] = (
    ("<tool_call>", HermesFormat()),
    ("<|python_tag|>", Llama3Format()),
    ("ipython", Llama3Format()),
    ("[TOOL_CALLS]", MistralFormat()),
)


def reply_format(chat_template: str | None) -> ReplyFormat:
    """Return the tool-call format a chat template teaches its model, or the generic one."""
    for marker, fmt in FORMATS:
        if chat_template and marker in chat_template:
            return fmt
    return GENERIC
