"""Anthropic's Messages API as Claude Code and the official `anthropic` SDK meet it: a real `candor serve`
on the default model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from live_server import start_server, stop_server

MODEL = "gemma-3-270m:Q4_K_M"
KEY = "sk-test-key"
# This SDK has no sampling arguments; older clients and Claude Code send them, and candor reads them.
GREEDY = {"temperature": 0}
# A tool schema as agents write them: keywords the grammar cannot enforce (minimum, format, maxLength).
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "days": {"type": "integer", "minimum": 1},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["city", "days"],
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("anthropic-home"), "--api-key", KEY)
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0)


def blocks(message: Any) -> list[dict[str, Any]]:
    """A message's content as plain data (the stream helper's blocks are subclasses of the whole's)."""
    return [{k: v for k, v in b.model_dump().items() if k != "parsed_output"} for b in message.content]


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Why is the sky blue?"}], **extra}


def test_a_whole_message_and_its_stream_are_the_same_message(client: anthropic.Anthropic) -> None:
    request = ask(max_tokens=12, extra_body=GREEDY, system="Answer briefly.")
    whole = client.messages.create(**request)
    assert whole.id.startswith("msg_") and whole.role == "assistant" and whole.model == MODEL
    assert [b.type for b in whole.content] == ["text"] and whole.content[0].text  # type: ignore[union-attr]
    assert whole.stop_reason in ("end_turn", "max_tokens") and whole.stop_sequence is None
    assert 0 < whole.usage.output_tokens <= 12
    assert (
        whole.usage.input_tokens == client.messages.count_tokens(**ask(system="Answer briefly.")).input_tokens
    )
    with client.messages.stream(**request) as stream:
        deltas = [
            e.delta.text for e in stream if e.type == "content_block_delta" and e.delta.type == "text_delta"
        ]
        streamed = stream.get_final_message()
    assert streamed.content[0].text == "".join(deltas)  # type: ignore[union-attr]
    assert blocks(streamed) == blocks(whole) and streamed.stop_reason == whole.stop_reason
    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    # the same prompt again: all but its last token came from the prefix cache
    assert streamed.usage.cache_read_input_tokens == whole.usage.input_tokens - 1


def test_a_stop_sequence_ends_the_message_and_is_named(client: anthropic.Anthropic) -> None:
    free = client.messages.create(**ask(max_tokens=24, extra_body=GREEDY))
    text = free.content[0].text  # type: ignore[union-attr]
    words = [w for w in text.split() if w.isalpha() and len(w) > 2]
    assert words, text
    stop = words[len(words) // 2]
    cut = client.messages.create(**ask(max_tokens=24, extra_body=GREEDY, stop_sequences=[stop, "zzzq"]))
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert stop not in cut.content[0].text and text.startswith(cut.content[0].text)  # type: ignore[union-attr]


def test_a_forced_tool_call_fits_its_schema_and_its_result_goes_back(client: anthropic.Anthropic) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Oslo for 3 days?"}]
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        called = client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=messages,
            tools=[WEATHER],
            tool_choice=choice,
            extra_body=GREEDY,
        )
        assert called.stop_reason == "tool_use"
        uses = [b for b in called.content if b.type == "tool_use"]
        assert len(uses) == 1 and uses[0].name == "get_weather"
        arguments = uses[0].input
        assert isinstance(arguments, dict) and isinstance(arguments["city"], str)
        assert isinstance(arguments["days"], int)
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=messages,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use" and [b.type for b in streamed.content] == ["tool_use"]
    assert blocks(streamed)[0]["input"] == arguments
    result = {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}
    thought = {"type": "thinking", "thinking": "hm", "signature": ""}  # sent back, left out of the prompt
    turns = [*messages, {"role": "assistant", "content": [thought, *called.content]}]
    turns.append({"role": "user", "content": [result]})
    answer = client.messages.create(model=MODEL, max_tokens=16, tools=[WEATHER], messages=turns)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    counted = client.messages.count_tokens(model=MODEL, messages=turns, tools=[WEATHER]).input_tokens
    assert counted == answer.usage.input_tokens
    before = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
    # the default model has no chat template, so no tool syntax: the tools are described in its system turn
    described = client.messages.count_tokens(model=MODEL, messages=messages, tools=[WEATHER]).input_tokens
    assert described > before + 20
    assert counted > before + 10  # the call and its result are in the prompt


def test_errors_come_in_anthropics_shape(server: str, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(
            model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0).messages.create(
            **ask(max_tokens=4)
        )
    bearer = {"authorization": f"Bearer {KEY}"}
    for body, needle in (
        (ask(), "max_tokens"),  # required, as in Anthropic's API
        (ask(max_tokens=0), "max_tokens"),
        (
            {
                **ask(max_tokens=4),
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": base64.b64encode(b"png").decode(),
                                },
                            }
                        ],
                    }
                ],
            },
            "vision",
        ),
        ({**ask(max_tokens=4), "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ):
        answer = httpx.post(server + "/v1/messages", json=body, headers=bearer, timeout=60)
        assert answer.status_code == 400, answer.text
        error = answer.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert needle in error["error"]["message"]
