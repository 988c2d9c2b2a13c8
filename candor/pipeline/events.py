"""What a reply is made of, as it streams: every API writes these in its own wire format."""

from __future__ import annotations

from dataclasses import dataclass

from candor.prompt.replies import ToolCall
from candor.types import FinishReason, Timings, TokenLogprob, Usage


@dataclass(frozen=True)
class ReplyEvent:
    """The next part of a reply. The last event carries the finish reason, usage and timings; tool calls
    come with it (their text is held back, so it never shows as content)."""

    text: str = ""  # answer text
    thinking: str = ""  # reasoning text
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None  # with the prompt tokens the prefix cache supplied
    timings: Timings | None = None
    stop: str | None = None  # the stop string that ended the reply (None: end of turn, or a limit)

    @property
    def last(self) -> bool:
        """Whether the reply ends with this event."""
        return self.finish_reason is not None

    @property
    def called_tools(self) -> bool:
        """Whether the reply ended in tool calls (OpenAI's finish_reason "tool_calls")."""
        return bool(self.tool_calls)
