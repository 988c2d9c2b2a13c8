"""OpenAI's Responses API as Codex and the official `openai` SDK meet it: a real `candor serve` on the
default model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from live_server import start_server, stop_server
from pydantic import BaseModel

MODEL = "gemma-3-270m:Q4_K_M"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


class City(BaseModel):
    name: str
    population: int


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    proc, url = start_server(tmp_path_factory.mktemp("responses-home"))
    yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    stop_server(proc)


def test_a_whole_response_and_its_stream_agree(client: openai.OpenAI) -> None:
    whole = client.responses.create(
        model=MODEL,
        instructions="Answer briefly.",
        input="Why is the sky blue?",
        max_output_tokens=12,
        temperature=0,
    )
    assert whole.id.startswith("resp_") and whole.output_text
    assert whole.status in ("completed", "incomplete") and whole.usage is not None
    if whole.status == "incomplete":
        assert whole.incomplete_details is not None and whole.incomplete_details.reason == "max_output_tokens"
        assert whole.usage.output_tokens == 12
    # OpenAI's stream helper reassembles completed responses only: the raw events carry an incomplete one
    events = list(
        client.responses.create(
            model=MODEL,
            instructions="Answer briefly.",
            input="Why is the sky blue?",
            max_output_tokens=12,
            temperature=0,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    streamed = events[-1].response  # type: ignore[union-attr]
    assert (
        kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == f"response.{whole.status}"
    )
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 1
    assert streamed.output_text == whole.output_text and streamed.status == whole.status
    assert streamed.usage is not None and streamed.usage.input_tokens == whole.usage.input_tokens
    # the same prompt again: all but its last token came from the prefix cache
    assert streamed.usage.input_tokens_details.cached_tokens == whole.usage.input_tokens - 1


def test_previous_response_id_continues_a_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada. Say hello.", max_output_tokens=8)
    assert client.responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=8
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # the first turn's prompt was kept in the KV cache and reused
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError, match="not stored"):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError, match="not stored"):
        client.responses.create(model=MODEL, input="again", previous_response_id=first.id)
    unstored = client.responses.create(model=MODEL, input="hi", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_a_required_function_call_and_its_output_round_trip(client: openai.OpenAI) -> None:
    tools = [WEATHER, {"type": "web_search"}]  # a hosted tool (Codex sends some) is skipped
    for stream in (False, True):
        request = {
            "model": MODEL,
            "input": "Weather in Oslo for 3 days?",
            "tools": tools,
            "tool_choice": "required",
        }
        if stream:
            with client.responses.stream(**request, temperature=0) as events:  # type: ignore[arg-type]
                called = events.get_final_response()
        else:
            called = client.responses.create(**request, temperature=0)  # type: ignore[arg-type]
        calls = [item for item in called.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather"
        arguments = json.loads(calls[0].arguments)
        assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)
    answer = client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"}],
        max_output_tokens=16,
    )
    assert answer.status in ("completed", "incomplete") and answer.usage is not None
    assert answer.usage.input_tokens_details.cached_tokens > 0


def test_structured_output_parses_into_the_model_class(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        model=MODEL, input="A city and its population, as JSON.", text_format=City, max_output_tokens=200
    )
    city = parsed.output_parsed
    assert isinstance(city, City) and isinstance(city.population, int)
    with pytest.raises(openai.BadRequestError, match="minimum"):
        client.responses.create(
            model=MODEL,
            input="x",
            text={
                "format": {"type": "json_schema", "name": "n", "schema": {"type": "integer", "minimum": 3}}
            },
        )
