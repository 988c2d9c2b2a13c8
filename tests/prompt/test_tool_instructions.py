"""Tools reach models whose chat format cannot describe them: in the system turn, the same every turn."""

from __future__ import annotations

from candor.prompt import (
    choose_chat_format,
    fallback_format,
    render_chat,
    renders_tools,
    with_tool_instructions,
)
from candor.types import Message, ToolCallRequest

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
QWEN_LIKE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
)


def test_a_fallback_format_gets_the_tools_in_its_system_turn_the_same_every_time() -> None:
    fmt = fallback_format("chatml")
    assert not renders_tools(fmt)
    turns = with_tool_instructions([Message("user", "weather in Oslo?")], [TOOL])
    assert turns[0].role == "system" and '"name": "get_weather"' in turns[0].content
    first = render_chat(fmt, turns)
    assert "get_weather" in first and first == render_chat(
        fmt, with_tool_instructions([Message("user", "weather in Oslo?")], [TOOL])
    )
    kept = with_tool_instructions([Message("system", "Be brief."), Message("user", "hi")], [TOOL])
    assert len(kept) == 2 and kept[0].content.startswith("Be brief.\n\n") and "get_weather" in kept[0].content


def test_past_calls_and_results_are_spelled_out_as_the_model_answered_them() -> None:
    # The format has no place for calls or results: without this the model would see an empty turn.
    call = ToolCallRequest("get_weather", {"city": "Oslo"}, "call_1")
    turns = with_tool_instructions(
        [
            Message("user", "weather in Oslo?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "sunny", name="get_weather"),
        ],
        [TOOL],
    )
    # the JSON object the system turn asks for, as a forced call generates it
    assert turns[2] == Message("assistant", '{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert turns[3].content == '{"tool_response": {"tool": "get_weather", "content": "sunny"}}'
    prompt = render_chat(fallback_format("gemma"), turns)
    assert '"arguments": {"city": "Oslo"}' in prompt and "sunny" in prompt


def test_a_template_that_describes_tools_itself_is_left_alone() -> None:
    fmt = choose_chat_format(QWEN_LIKE, "qwen2", ())
    assert renders_tools(fmt)
    assert not renders_tools(
        choose_chat_format("{% for m in messages %}{{ m.content }}{% endfor %}", "x", ())
    )
