"""Read a reply as it streams: reasoning and content go out as soon as they are certain; with tools the
content is held to the end, where the tool calls are read out of it."""

from __future__ import annotations

from collections.abc import Sequence

from candor.pipeline.events import ReplyEvent
from candor.pipeline.plan import ReplyPlan
from candor.prompt.replies import (
    ParsedReply,
    ReplyFormat,
    ThinkingSplitter,
    ToolCall,
    parse_reply,
    reply_format,
    split_thinking,
)
from candor.types import Chunk, FinishReason, TokenLogprob


class ReplyReader:
    """Turns one reply's chunks into events. `started`: the rendered prompt opened a <think> block
    (DeepSeek-R1 distills do), so the reply begins inside its reasoning."""

    def __init__(self, plan: ReplyPlan, template: str | None, *, started: bool = False) -> None:
        self._plan = plan
        self._started = started
        self._splitter = ThinkingSplitter(started=started) if plan.thinking else None
        reads_calls = plan.tools is not None and plan.calls
        self._format: ReplyFormat | None = reply_format(template) if reads_calls else None
        self._held: list[str] = []

    @classmethod
    def plain(cls) -> ReplyReader:
        """A reader that passes text through (raw prompts: no template, no tools, no thinking)."""
        return cls(ReplyPlan(), None)

    def read(self, chunk: Chunk) -> ReplyEvent:
        """The event for the next chunk of a streamed reply."""
        thinking, content = self._splitter.push(chunk.text) if self._splitter else ("", chunk.text)
        content = self._hold(content)
        calls: tuple[ToolCall, ...] = ()
        if chunk.finish_reason is not None:
            rest = self._finish()
            thinking += rest.thinking or ""
            content += rest.content
            calls = rest.tool_calls
        return ReplyEvent(
            content,
            thinking,
            calls,
            chunk.logprobs,
            chunk.finish_reason,
            chunk.usage,
            chunk.timings,
            chunk.stop,
        )

    def whole(self, text: str, last: Chunk, logprobs: Sequence[TokenLogprob] = ()) -> ReplyEvent:
        """The one event of a reply read whole: `text` is all of it, `last` its final chunk."""
        if self._format is None:
            thinking, content = (
                split_thinking(text, started=self._started) if self._plan.thinking else (None, text)
            )
            parsed = ParsedReply(content, thinking, ())
        else:
            parsed = parse_reply(text, self._format, thinking=self._plan.thinking, started=self._started)
        return ReplyEvent(
            parsed.content,
            parsed.thinking or "",
            parsed.tool_calls,
            tuple(logprobs),
            last.finish_reason or FinishReason.STOP,
            last.usage,
            last.timings,
            last.stop,
        )

    def _hold(self, content: str) -> str:
        if self._format is not None:
            self._held.append(content)
            return ""
        return content

    def _finish(self) -> ParsedReply:
        """The rest of the reply at its end: held-back text and the tool calls."""
        thinking, content = self._splitter.flush() if self._splitter else ("", "")
        content = self._hold(content)
        if self._format is None:
            return ParsedReply(content, thinking or None, ())
        rest, calls = self._format.parse_tool_calls("".join(self._held))
        return ParsedReply(rest, thinking or None, calls)
