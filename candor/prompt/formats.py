"""Pick a model's chat format (its own template, or a built-in fallback) and render conversations."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from candor.errors import ContextOverflow, InvalidParameter
from candor.prompt.budget import RenderLimits, measure
from candor.prompt.fallbacks import FALLBACKS, UNTEMPLATED_DEFAULTS, Fallback
from candor.prompt.sandbox import render_template
from candor.types import Message

if TYPE_CHECKING:
    from candor.identity import ModelCard

MODEL_TEMPLATE = "model's own template"
ROLES = ("system", "user", "assistant", "tool")
_SOURCES = ("model", "fallback")
_RESERVED = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token", "tools"})
FALLBACK_NAMES: tuple[str, ...] = tuple(row.name for row in FALLBACKS)
_RAW_REMEDY = "pass --raw to send your text without a chat template"
_MODEL_REMEDY = f"{_RAW_REMEDY}, or use one of candor's built-in chat formats ({', '.join(FALLBACK_NAMES)})"


@dataclass(frozen=True)
class ChatFormat:
    """How a conversation becomes prompt text: a jinja template and the stop strings it needs."""

    template: str  # jinja source
    source: str  # "model" or "fallback"
    name: str  # MODEL_TEMPLATE, or a fallback's name ("gemma", "chatml", ...)
    stop: tuple[str, ...] = ()  # stop strings needed beyond the model's end-of-generation tokens
    reason: str = ""  # why this format was chosen, for describe()

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise InvalidParameter(
                f"a chat format's source must be 'model' or 'fallback'; got {self.source!r}"
            )
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def is_fallback(self) -> bool:
        """True when candor supplies the format because the model has none."""
        return self.source == "fallback"

    @property
    def origin(self) -> str:
        """Who wrote the template, as error messages name it."""
        return (
            f"candor's built-in '{self.name}' chat format"
            if self.is_fallback
            else "the model's chat template"
        )

    @property
    def options(self) -> Mapping[str, Any]:
        """Sampling defaults (Ollama's names) for answers in this format: a fallback's model has no chat
        template, so it is bounded (see UNTEMPLATED_DEFAULTS); a model's own template needs none."""
        return UNTEMPLATED_DEFAULTS if self.is_fallback else {}

    def describe(self) -> str:
        """Say in one line which format this is and why it was chosen."""
        if not self.is_fallback:
            return "the model's own chat template"
        return f"fallback chat format '{self.name}' ({self.reason})" if self.reason else self.origin


def describe_options(options: Mapping[str, Any]) -> str:
    """Options as one line, `num_predict 256, repeat_penalty 1.1, ...` ("" for none)."""
    return ", ".join(f"{name} {value}" for name, value in options.items())


def _fallback(row: Fallback, reason: str) -> ChatFormat:
    return ChatFormat(template=row.template, source="fallback", name=row.name, stop=row.stop, reason=reason)


def fallback_format(name: str) -> ChatFormat:
    """Return the built-in chat format `name` (for a user who asks for it instead of the model's)."""
    for row in FALLBACKS:
        if row.name == name:
            return _fallback(row, "chosen by the user")
    raise InvalidParameter(f"no built-in chat format {name!r}; choose one of: {', '.join(FALLBACK_NAMES)}")


def chat_format_of(card: ModelCard) -> ChatFormat:
    """The chat format a model's file calls for (see choose_chat_format)."""
    return choose_chat_format(card.chat_template, card.architecture, card.special_tokens_present)


def choose_chat_format(
    chat_template: str | None, architecture: str | None, special_tokens: Collection[str]
) -> ChatFormat:
    """Use the model's own chat template, or else the fallback its vocabulary's turn tokens point to.

    Args:
        chat_template: the GGUF's `tokenizer.chat_template`, or None when it has none.
        architecture: the GGUF's `general.architecture`, if known (named when no known format fits).
        special_tokens: the turn tokens (see fallbacks.TURN_TOKENS) present in the vocabulary.

    Returns:
        The chat format to render conversations with.
    """
    if chat_template is not None and chat_template.strip():
        return ChatFormat(template=chat_template, source="model", name=MODEL_TEMPLATE)
    present = frozenset(special_tokens)
    row = next(row for row in FALLBACKS if row.tokens <= present)
    evidence = row.evidence
    if not row.tokens:
        evidence = f"{evidence} (architecture {architecture!r})" if architecture else evidence
    return _fallback(row, f"the model has no chat template; {evidence}")


def _message_dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidParameter("a chat needs at least one message")
    result = []
    for message in messages:
        message = Message.coerce(message)
        if message.role not in ROLES:
            raise InvalidParameter(f"unknown message role {message.role!r}; use one of: {', '.join(ROLES)}")
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:  # the shape Hugging Face templates read: tool_call.function.name/arguments
            item["tool_calls"] = [
                {"type": "function", "id": c.id, "function": {"name": c.name, "arguments": dict(c.arguments)}}
                for c in message.tool_calls
            ]
        if message.name:
            item["name"] = message.name
        result.append(item)
    return result


def renders_tools(fmt: ChatFormat) -> bool:
    """Whether a chat format describes tools to the model itself (a template that reads `tools`)."""
    return not fmt.is_fallback and "tools" in fmt.template


def with_tool_instructions(messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> list[Message]:
    """For a format that does not describe tools, describe them in the system turn, in the generic call
    format the replies are read in (llama.cpp's chat handler does the same for such templates). The text
    depends only on the tools, so a conversation renders the same every turn and its KV prefix is reused."""
    specs = [tool.get("function", tool) if isinstance(tool, Mapping) else tool for tool in tools]
    listed = "\n".join(json.dumps(spec, sort_keys=True, ensure_ascii=False) for spec in specs)
    note = (
        "You can call these tools. To call one, answer with only a JSON object like "
        '{"name": "TOOL_NAME", "arguments": {...}} and nothing else.\n' + listed
    )
    turns = [_spelled_out(m) for m in messages]
    if turns and turns[0].role == "system":
        turns[0] = Message("system", f"{turns[0].content}\n\n{note}")
        return turns
    return [Message("system", note), *turns]


def _spelled_out(message: Message) -> Message:
    """A past tool call or tool result as text the format can show (it has no place for either): calls as
    the JSON the model was asked to answer with, so a turn re-renders as the tokens it generated; results
    as llama.cpp's polyfill for such templates writes them."""
    if message.role == "assistant" and message.tool_calls:
        calls = [
            json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
            for c in message.tool_calls
        ]
        text = "\n".join([message.content, *calls] if message.content else calls)
        return Message("assistant", text, name=message.name, images=message.images)
    if message.role == "tool":
        response = {"tool_response": {"tool": message.name, "content": message.content}}
        return Message("tool", json.dumps(response, ensure_ascii=False), name=message.name)
    return message


def with_default_system(messages: Sequence[Message | Any], system: str | None) -> list[Message]:
    """The conversation as Messages, with a model's default system prompt first unless it has its own."""
    turns = [Message.coerce(m) for m in messages]
    if system and not any(m.role == "system" for m in turns):
        turns.insert(0, Message("system", system))
    return turns


def render_chat(
    fmt: ChatFormat,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Mapping[str, Any]] | None = None,
    variables: Mapping[str, Any] | None = None,
    limits: RenderLimits | None = None,
) -> str:
    """Render a conversation into prompt text with a chat format, in the sandbox.

    The template decides where bos_token goes, so tokenize the result without adding another BOS.

    Args:
        fmt: the chat format (from choose_chat_format or fallback_format).
        messages: the conversation; roles must be system, user, assistant or tool.
        add_generation_prompt: end with the header that starts the assistant's turn.
        bos_token: the model's beginning-of-sequence text, for templates that write it.
        eos_token: the model's end-of-sequence text, for templates that write it.
        tools: function definitions (OpenAI style) for templates that describe tools.
        variables: further names some templates read (e.g. {"enable_thinking": False}).
        limits: bounds on the render; RenderLimits() when None.

    Returns:
        The prompt text.

    Raises:
        InvalidParameter: a message has an unknown role, or a variable reuses a reserved name.
        ContextOverflow: the conversation is too large for any template to render.
        TemplateError: the template failed, tried to leave its sandbox, or passed a limit.
    """
    limits = limits or RenderLimits()
    clash = sorted(_RESERVED.intersection(variables or {}))
    if clash:
        raise InvalidParameter(
            f"template variable(s) {', '.join(clash)} are set by candor; pass them as arguments"
        )
    context: dict[str, Any] = {
        **(variables or {}),
        "messages": _message_dicts(messages),
        "add_generation_prompt": bool(add_generation_prompt),
        "bos_token": bos_token,
        "eos_token": eos_token,
        "tools": [dict(tool) for tool in tools] if tools is not None else None,
    }
    size = measure(context, limits.max_value)
    if size > limits.max_value:
        raise ContextOverflow(
            f"the conversation is larger than a chat template may render ({limits.max_value:,} characters); "
            "shorten it or start a new chat"
        )
    return render_template(
        fmt.template,
        context,
        origin=fmt.origin,
        remedy=_MODEL_REMEDY if not fmt.is_fallback else _RAW_REMEDY,
        limits=limits,
    )
