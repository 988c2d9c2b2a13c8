"""Parsing finished replies: tool calls in each model family's format, <think> splitting, forced calls."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from candor.errors import InvalidParameter
from candor.prompt.replies import (
    ParsedReply,
    ReplyFormat,
    ThinkingSplitter,
    ToolCall,
    forced_call_schema,
    parse_reply,
    reply_format,
    split_thinking,
    template_thinks,
)

HERMES = reply_format("{% for tool in tools %}<tool_call>{{ tool }}</tool_call>{% endfor %}")
LLAMA3 = reply_format("<|start_header_id|>ipython<|end_header_id|>")
MISTRAL = reply_format("[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]")
GENERIC = reply_format(None)
ALL = [HERMES, LLAMA3, MISTRAL, GENERIC]
WEATHER = {"city": "Paris", "unit": "C"}


def calls(reply: ParsedReply) -> list[tuple[str, dict[str, object]]]:
    return [(call.name, call.arguments) for call in reply.tool_calls]


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("... <tool_call>\n{{ tool_call }}\n</tool_call> ...", "hermes"),
        ("{{- '<|python_tag|>' }}", "llama3"),
        ("<|start_header_id|>ipython<|end_header_id|>", "llama3"),
        ("[TOOL_CALLS] [", "mistral"),
        ("{% for m in messages %}{{ m.content }}{% endfor %}", "generic"),
        ("", "generic"),
        (None, "generic"),
    ],
)
def test_the_template_picks_the_format(template: str | None, name: str) -> None:
    assert reply_format(template).name == name


def test_call_ids_are_fresh_and_openai_shaped() -> None:
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call>' * 2
    ids = [call.id for call in parse_reply(text, HERMES, thinking=False).tool_calls]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
    assert ids[0] != ids[1]


# Hermes / Qwen


def test_hermes_several_calls_with_content_around_them() -> None:
    text = (
        "Let me check both.\n"
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "time", "arguments": {"tz": "CET"}}\n</tool_call>\n'
        "One moment."
    )
    reply = parse_reply(text, HERMES, thinking=False)
    assert calls(reply) == [("weather", WEATHER), ("time", {"tz": "CET"})]
    assert reply.content == "Let me check both.\n\n\nOne moment."
    assert reply.thinking is None


def test_hermes_arguments_written_as_a_string_are_decoded() -> None:
    call = {"name": "weather", "arguments": json.dumps(WEATHER)}
    text = f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
    assert calls(parse_reply(text, HERMES, thinking=False)) == [("weather", WEATHER)]


def test_hermes_malformed_call_stays_in_content_beside_good_ones() -> None:
    bad = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"\n</tool_call>'
    good = '<tool_call>\n{"name": "time", "arguments": {}}\n</tool_call>'
    reply = parse_reply(f"{bad}\n{good}", HERMES, thinking=False)
    assert calls(reply) == [("time", {})]
    assert reply.content == bad


def test_hermes_only_malformed_leaves_text_untouched() -> None:
    text = "<tool_call>\n{'name': 'weather'}\n</tool_call>"
    assert parse_reply(text, HERMES, thinking=False) == ParsedReply(text, None, ())


def test_hermes_unclosed_block_at_the_end_is_still_a_call() -> None:
    text = 'Sure.\n<tool_call>\n{"name": "time", "arguments": {"tz": "UTC"}}\n'
    reply = parse_reply(text, HERMES, thinking=False)
    assert (reply.content, calls(reply)) == ("Sure.", [("time", {"tz": "UTC"})])


def test_hermes_qwen3_thinking_then_call() -> None:
    text = (
        "<think>\nThe user wants the weather.\n</think>\n\n"
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'
    )
    reply = parse_reply(text, HERMES, thinking=True)
    assert reply.thinking == "The user wants the weather."
    assert (reply.content, calls(reply)) == ("", [("weather", WEATHER)])


def test_a_call_written_inside_thinking_is_not_a_call() -> None:
    text = '<think><tool_call>{"name": "a", "arguments": {}}</tool_call></think>No call.'
    reply = parse_reply(text, HERMES, thinking=True)
    assert (reply.content, reply.tool_calls) == ("No call.", ())


# Llama 3


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "weather", "parameters": {"city": "Paris", "unit": "C"}}',
        '{"type": "function", "name": "weather", "parameters": {"city": "Paris", "unit": "C"}}',
        '<|python_tag|>{"name": "weather", "parameters": {"city": "Paris", "unit": "C"}}',
        '  {"name": "weather", "parameters": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"C\\"}"}\n',
        '{"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}',
    ],
)
def test_llama3_single_call(text: str) -> None:
    reply = parse_reply(text, LLAMA3, thinking=False)
    assert (reply.content, calls(reply)) == ("", [("weather", WEATHER)])


def test_llama3_several_calls_separated_by_semicolons() -> None:
    text = '<|python_tag|>{"name": "a", "parameters": {"q": "x;y"}}; {"name": "b", "parameters": {}};'
    assert calls(parse_reply(text, LLAMA3, thinking=False)) == [("a", {"q": "x;y"}), ("b", {})]


def test_llama3_content_before_the_python_tag_is_kept() -> None:
    text = 'Looking it up.<|python_tag|>{"name": "a", "parameters": {}}'
    reply = parse_reply(text, LLAMA3, thinking=False)
    assert (reply.content, calls(reply)) == ("Looking it up.", [("a", {})])


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Bob", "age": 3}',  # a JSON answer, not a call
        '{"name": "a", "parameters": {"q": 1}',  # truncated
        '{"name": "a", "parameters": {}} and then some prose',
        '<|python_tag|>brave_search.call(query="x")',  # built-in tool syntax, not JSON
        "The answer is 42.",
    ],
)
def test_llama3_non_calls_stay_content(text: str) -> None:
    assert parse_reply(text, LLAMA3, thinking=False) == ParsedReply(text, None, ())


# Mistral


def test_mistral_json_list_of_calls() -> None:
    text = (
        '[TOOL_CALLS] [{"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}, '
        '{"name": "time", "arguments": "{\\"tz\\": \\"CET\\"}", "id": "abc123XYZ"}]'
    )
    reply = parse_reply(text, MISTRAL, thinking=False)
    assert (reply.content, calls(reply)) == ("", [("weather", WEATHER), ("time", {"tz": "CET"})])


def test_mistral_name_args_form_repeated() -> None:
    text = (
        'Checking.[TOOL_CALLS]weather[ARGS]{"city": "Paris", "unit": "C"}'
        '[TOOL_CALLS]time[CALL_ID]a1b2c3d4e[ARGS]{"tz": "CET"}'
    )
    reply = parse_reply(text, MISTRAL, thinking=False)
    assert (reply.content, calls(reply)) == ("Checking.", [("weather", WEATHER), ("time", {"tz": "CET"})])


@pytest.mark.parametrize(
    "text",
    [
        '[TOOL_CALLS] [{"name": "weather", "arguments": {"city": ',
        "[TOOL_CALLS]weather[ARGS]not json",
        "[TOOL_CALLS]",
        "Plain answer mentioning [ARGS].",
    ],
)
def test_mistral_malformed_stays_content(text: str) -> None:
    assert parse_reply(text, MISTRAL, thinking=False) == ParsedReply(text, None, ())


def test_mistral_malformed_segment_kept_beside_a_good_one() -> None:
    text = '[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b[ARGS]{oops'
    reply = parse_reply(text, MISTRAL, thinking=False)
    assert (reply.content, calls(reply)) == ("[TOOL_CALLS]b[ARGS]{oops", [("a", {"x": 1})])


# Generic, and the bare call every format accepts (what a forced-call grammar produces)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@pytest.mark.parametrize(
    "text",
    [
        '{"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}',
        '{"name": "weather", "parameters": {"city": "Paris", "unit": "C"}}',
        '```json\n{"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}\n```',
        '\n{"name": "weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"C\\"}"}',
    ],
)
def test_every_format_accepts_a_bare_json_call(fmt: ReplyFormat, text: str) -> None:
    reply = parse_reply(text, fmt, thinking=False)
    assert (reply.content, calls(reply)) == ("", [("weather", WEATHER)])


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Bob"}',
        '{"name": "a", "arguments": [1, 2]}',
        '{"name": "a", "arguments": "not json"}',
        'Here: {"name": "a", "arguments": {}}',
        '{"name": "a", "arguments": {}',
        "",
        "Hello!",
    ],
)
def test_non_calls_are_content_in_every_format(fmt: ReplyFormat, text: str) -> None:
    assert parse_reply(text, fmt, thinking=False) == ParsedReply(text, None, ())


# Thinking


@pytest.mark.parametrize(
    ("text", "thinking", "content"),
    [
        ("<think>\nstep 1\nstep 2\n</think>\n\nThe answer.", "step 1\nstep 2", "The answer."),
        ("step 1</think>\n\nThe answer.", "step 1", "The answer."),  # R1 distill: prompt opened <think>
        ("<think>\nstill going", "still going", ""),  # unclosed: all thinking
        ("<think>\n\n</think>\n\nHi", None, "Hi"),  # Qwen3 with thinking off
        ("Just an answer.", None, "Just an answer."),
        ("Pre <think>x</think>post", "x", "Pre post"),
        ("<think>a</think>b</think>c", "a", "b</think>c"),  # one block only
    ],
)
def test_split_thinking(text: str, thinking: str | None, content: str) -> None:
    assert split_thinking(text) == (thinking, content)
    reply = parse_reply(text, GENERIC, thinking=True)
    assert (reply.thinking, reply.content) == (thinking, content)


def test_thinking_false_leaves_tags_in_content() -> None:
    text = "<think>hmm</think>Hi"
    assert parse_reply(text, HERMES, thinking=False) == ParsedReply(text, None, ())


@pytest.mark.parametrize(
    ("template", "thinks"),
    [
        ("{{ '<think>\\n' }}", True),
        ("{% if enable_thinking is false %}", True),
        ("{{ message.reasoning_content }}", True),
        ("{{ messages }}", False),
        (None, False),
    ],
)
def test_template_thinks(template: str | None, thinks: bool) -> None:
    assert template_thinks(template) is thinks


def stream(text: str, cuts: list[int], *, started: bool = False) -> tuple[str, str]:
    splitter = ThinkingSplitter(started=started)
    thinking, content = "", ""
    bounds = [0, *sorted(cuts), len(text)]
    for start, end in itertools.pairwise(bounds):
        more = splitter.push(text[start:end])
        thinking, content = thinking + more[0], content + more[1]
    last = splitter.flush()
    return thinking + last[0], content + last[1]


SAMPLES = [
    "<think>\nplan < a </ b </think\n</think>\n\nanswer <think> here",
    "before <thi <think>deep</think>after",
    "<think>never closed </thin",
    "no tags at all <",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_streaming_splitter_at_every_single_cut(text: str) -> None:
    whole = stream(text, [])
    for cut in range(len(text) + 1):
        assert stream(text, [cut]) == whole


def test_streaming_splitter_output() -> None:
    assert stream(SAMPLES[0], []) == ("plan < a </ b </think", "answer <think> here")  # as split whole
    assert stream("deep</think>\nafter", [3, 7], started=True) == ("deep", "after")
    assert stream("<think>x</think>y", [], started=False) == ("x", "y")


def test_streaming_splitter_with_other_tags() -> None:
    splitter = ThinkingSplitter("<|think|>", "<|/think|>")
    assert splitter.push("<|thi") == ("", "")
    assert splitter.push("nk|>a<|/th") == ("a", "")
    assert splitter.push("ink|>b") == ("", "b")
    assert splitter.flush() == ("", "")


def test_streaming_splitter_holds_back_only_possible_tags() -> None:
    splitter = ThinkingSplitter()
    assert splitter.push("a <t") == ("", "a ")
    assert splitter.push("x") == ("", "<tx")
    assert splitter.push("<") == ("", "")
    assert splitter.flush() == ("", "<")


@given(
    st.lists(
        st.sampled_from(["<think>", "</think>", "<", "</", "<th", "ink>", "a", " ", "\n", "x>"]), max_size=12
    ),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    st.booleans(),
)
def test_streaming_equals_one_push_for_any_cuts(parts: list[str], cuts: list[int], started: bool) -> None:
    text = "".join(parts)
    cuts = [cut % (len(text) + 1) for cut in cuts]
    assert stream(text, cuts, started=started) == stream(text, [], started=started)


@given(st.text(alphabet="<>/thinkab \n", max_size=40), st.integers(min_value=0, max_value=40))
def test_streaming_never_loses_text_without_tags(text: str, cut: int) -> None:
    thinking, content = stream(text, [min(cut, len(text))])
    if "<think>" not in text:
        assert (thinking, content) == ("", text)


# Forced calls


def weather_tool() -> dict[str, object]:
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": "weather", "description": "d", "parameters": params}}


def test_forced_schema_for_one_named_tool() -> None:
    other = {"name": "time", "parameters": {"type": "object", "properties": {}}}
    schema = forced_call_schema([weather_tool(), other], "weather")
    assert schema == {
        "type": "object",
        "properties": {
            "name": {"const": "weather"},
            "arguments": weather_tool()["function"]["parameters"],  # type: ignore[index]
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    assert list(schema["properties"]) == ["name", "arguments"]  # name is generated first


def test_forced_schema_for_any_of_several_tools() -> None:
    schema = forced_call_schema([weather_tool(), {"type": "function", "function": {"name": "time"}}], None)
    names = [option["properties"]["name"]["const"] for option in schema["anyOf"]]
    assert names == ["weather", "time"]
    assert schema["anyOf"][1]["properties"]["arguments"] == {"type": "object"}


def test_forced_schema_for_a_single_tool_needs_no_any_of() -> None:
    assert forced_call_schema([weather_tool()], None) == forced_call_schema([weather_tool()], "weather")


def test_forced_schema_round_trips_through_every_parser() -> None:
    schema = forced_call_schema([weather_tool()], "weather")
    json.dumps(schema)  # serialisable for the grammar converter
    text = json.dumps({"name": "weather", "arguments": {"city": "Oslo"}})
    for fmt in ALL:
        assert calls(parse_reply(text, fmt, thinking=False)) == [("weather", {"city": "Oslo"})]


@pytest.mark.parametrize(
    ("tools", "name"),
    [
        ([], None),
        ([{"type": "function", "function": {"description": "no name"}}], None),
        ([{"name": "t", "parameters": "not a schema"}], None),
    ],
)
def test_forced_schema_rejects_bad_tools(tools: list[dict[str, object]], name: str | None) -> None:
    with pytest.raises(InvalidParameter):
        forced_call_schema(tools, name)


def test_forced_schema_rejects_an_unknown_tool_name() -> None:
    with pytest.raises(InvalidParameter, match="not among the tools: weather"):
        forced_call_schema([weather_tool()], "nope")


def test_tool_call_is_frozen() -> None:
    call = ToolCall("a", {}, "call_0")
    with pytest.raises(AttributeError):
        call.name = "b"  # type: ignore[misc]
