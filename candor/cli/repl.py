"""The interactive chat of `candor run`, with `ollama run`'s slash commands."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, TextIO

from candor.cli.chat_backends import ChatBackend
from candor.cli.stats import print_stats
from candor.errors import CandorError, InvalidParameter
from candor.parameters import SAMPLING_OPTIONS, parse_option
from candor.types import Message, SamplingParams

HELP = """Available commands:
  /set system <text>          set the system prompt
  /set parameter NAME VALUE   set a sampling parameter (/set parameter to list them)
  /show info|parameters|system|template|license
  /clear                      forget the conversation
  /bye                        leave (or Ctrl-D)
  /?, /help                   this help
Ctrl-C stops the current answer. Start and end a multi-line message with \"\"\"."""


class ChatSession:
    """The state of one interactive chat: history, system prompt and sampling settings."""

    def __init__(
        self,
        backend: ChatBackend,
        params: SamplingParams,
        *,
        options: dict[str, Any] | None = None,
        system: str | None,
        raw: bool,
        verbose: bool,
        out: TextIO,
    ) -> None:
        self.backend = backend
        self.params = params
        self.options = dict(options or {})  # what the user set, by Ollama's names, for a server
        self.system = system
        self.raw = raw
        self.verbose = verbose
        self.out = out
        self.history: list[Message] = []

    def messages(self) -> list[Message]:
        """The conversation as the model sees it."""
        system = [Message("system", self.system)] if self.system else []
        return [*system, *self.history]

    def ask(self, text: str) -> None:
        """Stream one answer; Ctrl-C stops it and keeps what was shown."""
        self.history.append(Message("user", text))
        parts: list[str] = []
        last = None
        stream = None
        try:
            conversation = [Message("user", text)] if self.raw else self.messages()
            stream = self.backend.answer(conversation, self.params, self.options, self.raw)
            for chunk in stream:
                if chunk.text:
                    parts.append(chunk.text)
                    self.out.write(chunk.text)
                    self.out.flush()
                last = chunk
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()  # cancels the generation; the model is ready for the next turn
            self.out.write(" [stopped]")
        except CandorError:
            self.history.pop()
            raise
        self.out.write("\n\n")
        self.out.flush()
        self.history.append(Message("assistant", "".join(parts)))
        if self.verbose and last is not None:
            print_stats(last, sys.stderr)

    def command(self, line: str) -> bool:
        """Run a slash command; return False when the chat should end."""
        words = line.split(maxsplit=2)
        name = words[0].lower()
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name in ("/?", "/help"):
            print(HELP, file=self.out)
        elif name == "/clear":
            self.history.clear()
            print("Cleared session context", file=self.out)
        elif name == "/set":
            self._set(words[1:])
        elif name == "/show":
            self._show(words[1] if len(words) > 1 else "")
        else:
            print(f"Unknown command '{words[0]}'. Type /? for help", file=self.out)
        return True

    def _set(self, words: list[str]) -> None:
        if words and words[0] == "system" and len(words) == 2:
            self.system = words[1]
            print("Set system message.", file=self.out)
        elif words and words[0] == "parameter" and len(words) == 2 and len(words[1].split()) == 2:
            key, value = words[1].split()
            self._set_parameter(key, value)
        elif words and words[0] == "parameter":
            print(
                "Usage: /set parameter NAME VALUE, where NAME is one of: " + ", ".join(SAMPLING_OPTIONS),
                file=self.out,
            )
        else:
            print("Usage: /set system <text> | /set parameter NAME VALUE", file=self.out)

    def _set_parameter(self, key: str, value: str) -> None:
        if key == "num_ctx":
            print("num_ctx is fixed when the model loads; restart with --ctx N", file=self.out)
            return
        try:
            field, parsed = parse_option(key, value)
            if field == "stop":
                parsed = (*self.params.stop, parsed)
            self.params = self.params.with_overrides(**{field: parsed})
            self.options[key] = list(parsed) if field == "stop" else parsed
        except InvalidParameter as exc:
            print(f"Could not set {key}: {exc}", file=self.out)
            return
        print(f"Set parameter '{key}' to '{value}'", file=self.out)

    def _show(self, what: str) -> None:
        if what == "parameters":
            for key, (field, _) in SAMPLING_OPTIONS.items():
                print(f"{key:<18} {getattr(self.params, field)}", file=self.out)
            print(f"{'stop':<18} {list(self.params.stop)}", file=self.out)
        elif what == "system":
            print(self.system or "No system message was specified.", file=self.out)
        elif (text := self.backend.show(what)) is not None:
            print(text, file=self.out)
        else:
            print("Usage: /show info|parameters|system|template|license", file=self.out)


def read_message(prompt: str) -> str:
    """Read one message; a line starting with three quotes reads until the closing quotes."""
    line = input(prompt)
    if not line.startswith('"""'):
        return line
    lines = [line[3:]]
    while not lines[-1].endswith('"""'):
        lines.append(input("... "))
    lines[-1] = lines[-1][:-3]
    return "\n".join(lines).strip()


def chat_loop(session: ChatSession) -> int:
    """Run the interactive chat until /bye or Ctrl-D."""
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401 - line editing and history for input()
    note = None if session.raw else session.backend.fallback_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    print("Chatting with " + session.backend.banner() + ". Type /? for help, /bye to leave.", file=sys.stderr)
    while True:
        try:
            text = read_message(">>> ")
        except EOFError:
            print(file=sys.stdout)
            return 0
        except KeyboardInterrupt:
            print("\nUse Ctrl + d or /bye to exit.", file=sys.stdout)
            continue
        if not text.strip():
            continue
        if text.startswith("/"):
            if not session.command(text.strip()):
                return 0
            continue
        try:
            session.ask(text)
        except KeyboardInterrupt:  # Ctrl-C landed between reading the line and streaming
            print(" [stopped]\n", file=sys.stdout)
        except CandorError as exc:
            print(f"Error: {exc}", file=sys.stderr)
