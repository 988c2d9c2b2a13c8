"""Where the interactive chat's model runs: loaded in this process, or on a running candor server."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from candor.cli.licenses import describe, describe_license
from candor.client import call, stream
from candor.parameters import apply_options
from candor.prompt import describe_options
from candor.store.library import license_of
from candor.types import Chunk, ChunkStream, FinishReason, Message, SamplingParams, Timings, Usage

if TYPE_CHECKING:  # the local backend is handed a loaded model; importing one loads llama.cpp
    from candor.model import Model


class ChatBackend(Protocol):
    """What the chat needs of a model. Closing an answer's iterator stops the generation."""

    def banner(self) -> str:
        """One line saying what the user is chatting with."""

    def fallback_note(self) -> str | None:
        """Said once when the model chats through a fallback format rather than its own template."""

    def answer(
        self, messages: Sequence[Message], params: SamplingParams, options: dict[str, Any], raw: bool
    ) -> ChunkStream:
        """Stream the reply to the conversation (raw: the last message's text, without the template).
        `params` are the full settings; `options` only those the user set (Ollama's names)."""

    def show(self, what: str) -> str | None:
        """/show info, template or license as text; None for anything else."""

    def defaults(self, raw: bool) -> SamplingParams:
        """The settings answers start from before the user's (raw: without the chat format's)."""


class LocalChat:
    """The model loaded in this process."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def banner(self) -> str:
        return self.model.card.summary()

    def fallback_note(self) -> str | None:
        fmt = self.model.chat_format
        return fmt.describe() if fmt.is_fallback else None

    def answer(
        self, messages: Sequence[Message], params: SamplingParams, options: dict[str, Any], raw: bool
    ) -> ChunkStream:
        if raw:
            return self.model.generate(messages[-1].content, params=params)
        return self.model.chat(list(messages), params=params)

    def defaults(self, raw: bool) -> SamplingParams:
        return self.model.defaults if raw else self.model.chat_defaults

    def show(self, what: str) -> str | None:
        card = self.model.card
        if what == "info":
            return "\n".join(
                (
                    card.summary(),
                    card.lineage(),
                    f"context window: {self.model.n_ctx} tokens",
                    f"chat format: {self.model.chat_format.describe()}",
                    *_defaults_line(self.model.chat_format.options),
                )
            )
        if what == "template":
            return self.model.chat_format.template
        if what == "license":
            model = self.model
            name = model.entry.name if model.entry else str(model.path)
            return describe(license_of(name, card, model.entry))
        return None


class ServerChat:
    """The model on a running candor server, through its Ollama API (as `ollama run` talks to Ollama)."""

    def __init__(self, base: str, model: str, *, thinking_out: TextIO | None = None) -> None:
        self.base = base
        self.model = model
        # A thinking model's reasoning goes here (stderr by default), as `candor run PROMPT` shows it.
        self.thinking_out = thinking_out or sys.stderr
        self._shown: dict[str, Any] = call(base, "POST", "/api/show", {"model": model})  # 404: no such model
        self._candor: dict[str, Any] = self._shown.get("candor") or {}

    def banner(self) -> str:
        summary = self._candor.get("summary") or self.model
        return f"{summary}, on the candor server at {self.base}"

    def fallback_note(self) -> str | None:
        return str(self._candor.get("chat_format")) if self._candor.get("chat_format_fallback") else None

    def answer(
        self, messages: Sequence[Message], params: SamplingParams, options: dict[str, Any], raw: bool
    ) -> ChunkStream:
        body: dict[str, Any] = {"model": self.model, "options": options, "stream": True}
        if raw:
            body.update(prompt=messages[-1].content, raw=True)
            lines = stream(self.base, "/api/generate", body)
        else:
            body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
            lines = stream(self.base, "/api/chat", body)
        try:
            for line in lines:
                message = line.get("message") or {}
                if message.get("thinking"):
                    self.thinking_out.write(message["thinking"])
                    self.thinking_out.flush()
                text = line["response"] if "response" in line else message.get("content")
                if text:
                    yield Chunk(text)
                if line.get("done"):
                    yield final_chunk(line)  # its counters, for --verbose
        finally:
            lines.close()  # hangs up, which cancels the generation on the server

    def defaults(self, raw: bool) -> SamplingParams:
        # For /show parameters: the server applies them itself (a request sends only what the user set).
        return apply_options(SamplingParams(), {} if raw else self._candor.get("chat_defaults") or {})

    def show(self, what: str) -> str | None:
        if what == "info":
            loaded = call(self.base, "GET", "/api/ps").get("models", [])
            context = next((m.get("context_length") for m in loaded if m.get("name") == self.model), None)
            lines = [self._candor.get("summary", self.model), self._candor.get("identity", "")]
            if context:
                lines.append(f"context window: {context} tokens")
            lines.append(f"chat format: {self._candor.get('chat_format', '')}")
            lines.extend(_defaults_line(self._candor.get("chat_defaults") or {}))
            lines.append(f"served by the candor server at {self.base}")
            return "\n".join(line for line in lines if line)
        if what == "template":
            return str(self._shown.get("template") or "")
        if what == "license":
            about = self._candor.get("license") or {}
            files = about.get("files") or []
            text = str(self._shown.get("license") or "")
            # Ollama's `license` is every file's text in one (or, with none, the metadata's licence name)
            source = ", ".join(files) or f"on the candor server at {self.base}"
            return describe_license(
                self.model,
                license=about.get("metadata"),
                name=about.get("name"),
                link=about.get("link"),
                texts=[(source, text)] if text and (files or not about) else [],
            )
        return None


def _defaults_line(options: Mapping[str, Any]) -> list[str]:
    """/show info's line on the defaults a model without a chat template answers with (none: no line)."""
    if not options:
        return []
    why = "no chat template of its own; /set parameter overrides them"
    return [f"answer defaults: {describe_options(options)} ({why})"]


def final_chunk(line: Mapping[str, Any]) -> Chunk:
    """An Ollama final line's counters (nanoseconds) as the Chunk that --verbose prints."""
    ns = 1e9
    reason = line.get("done_reason")
    return Chunk(
        "",
        finish_reason=FinishReason(reason) if reason in ("stop", "length") else None,
        usage=Usage(int(line.get("prompt_eval_count", 0)), int(line.get("eval_count", 0))),
        timings=Timings(
            prompt_seconds=line.get("prompt_eval_duration", 0) / ns,
            decode_seconds=line.get("eval_duration", 0) / ns,
            load_seconds=line.get("load_duration", 0) / ns,
        ),
    )
