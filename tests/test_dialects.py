"""Each API dialect converts its wire format to the same internal request: the pipeline below sees no
Ollama option names and no OpenAI field names."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from candor.errors import InvalidParameter
from candor.pipeline import JSON_OBJECT, ReplyRequest
from candor.server.ollama import convert as ollama
from candor.server.ollama.protocol import ChatRequest, GenerateRequest
from candor.server.openai import convert as openai
from candor.server.openai.protocol import ChatCompletionRequest, CompletionRequest
from candor.types import Message, SamplingParams

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def ollama_chat(**fields: Any) -> ReplyRequest:
    return ollama.chat_request(ChatRequest(model="m", **fields), keep_alive=None)


def openai_chat(**fields: Any) -> ReplyRequest:
    return openai.chat_request(ChatCompletionRequest(model="m", **fields))


def test_the_same_chat_in_either_dialect_is_the_same_request() -> None:
    from_ollama = ollama_chat(
        messages=[{"role": "user", "content": "look"}],
        tools=[TOOL],
        format=SCHEMA,
        options={
            "temperature": 0.2,
            "num_predict": 7,
            "stop": ["END"],
            "seed": 3,
            "top_k": 5,
            "grammar": "x",
        },
        logprobs=True,
        top_logprobs=2,
    )
    from_openai = openai_chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": "look"}]}],
        tools=[TOOL],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
        grammar="x",  # llama-server's; a response format takes its place, as Ollama's format does
        temperature=0.2,
        max_tokens=7,
        stop="END",
        seed=3,
        top_k=5,
        logprobs=True,
        top_logprobs=2,
    )
    assert from_ollama.messages == from_openai.messages == [Message("user", "look")]
    assert from_ollama.response_format == from_openai.response_format
    assert from_ollama.tools == from_openai.tools == [TOOL]
    wanted = SamplingParams(temperature=0.2, max_tokens=7, stop=("END",), seed=3, top_k=5, logprobs=2)
    assert from_ollama.sampled(SamplingParams()) == from_openai.sampled(SamplingParams()) == wanted


def test_images_in_either_dialect_are_the_same_bytes_and_are_refused_for_now() -> None:
    b64 = base64.b64encode(PNG).decode()
    ollama_body = ChatRequest(model="m", messages=[{"role": "user", "content": "look", "images": [b64]}])
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
    ]
    openai_body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": parts}])
    turn = Message("user", "look", images=(PNG,))
    assert ollama.messages(ollama_body) == openai.messages(openai_body) == [turn]
    with pytest.raises(InvalidParameter, match="vision is not supported yet"):
        ollama.chat_request(ollama_body, keep_alive=None)
    with pytest.raises(InvalidParameter, match="vision is not supported yet"):
        openai.chat_request(openai_body)


def test_llama_servers_seed_minus_one_is_a_fresh_seed() -> None:
    request = openai_chat(messages=[{"role": "user", "content": "x"}], seed=-1)
    assert request.sampled(SamplingParams(seed=9)).seed is None


def test_json_modes_and_raw_prompts_agree() -> None:
    assert (
        ollama_chat(messages=[], format="json").response_format
        == openai_chat(
            messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
        ).response_format
    )
    assert ollama_chat(messages=[], format="json").response_format is not None
    assert ollama_chat(messages=[], format="json").response_format.schema == JSON_OBJECT  # type: ignore[union-attr]
    raw = ollama.generate_request(GenerateRequest(model="m", prompt="2+2=", raw=True), keep_alive=None)
    legacy = openai.completion_request(CompletionRequest(model="m", prompt="2+2="))
    assert raw.raw and legacy.raw and raw.prompt == legacy.prompt == "2+2="


def test_ollama_no_limit_and_fresh_seed_override_a_models_defaults() -> None:
    bounded = SamplingParams(max_tokens=256, seed=9)  # what a model without a template starts from
    request = ollama_chat(messages=[], options={"num_predict": -1, "seed": -1})
    assert request.sampled(bounded).max_tokens is None and request.sampled(bounded).seed is None


@pytest.mark.parametrize(
    "convert, match",
    [
        (lambda: ollama_chat(messages=[{"role": "user", "content": "x", "images": ["%%%"]}]), "base64"),
        (
            lambda: openai_chat(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}],
                    }
                ]
            ),
            "data: URL",
        ),
        (
            lambda: ollama_chat(messages=[], format={"type": "string", "minLength": 1, "uniqueItems": 1}),
            "unique",
        ),
        (lambda: ollama_chat(messages=[], options={"temperature": -1}), "temperature"),
        (
            lambda: openai_chat(messages=[{"role": "user", "content": "x"}], response_format={"type": "xml"}),
            "xml",
        ),
    ],
)
def test_bad_requests_are_refused_while_converting(convert: Any, match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        convert()


def _ref_nowhere() -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/missing"}}}


def test_an_anthropic_conversation_is_the_same_request_as_its_openai_twin() -> None:
    from candor.server.anthropic import convert as anthropic
    from candor.server.anthropic.protocol import MessagesRequest

    body = MessagesRequest(
        model="m",
        max_tokens=7,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {"role": "user", "content": "look"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "dropped", "signature": ""},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
        ],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any"},
        stop_sequences=["END"],
        temperature=0.2,
        top_k=5,
        thinking={"type": "adaptive"},
    )
    request = anthropic.messages_request(body)
    assert [(m.role, m.content, m.name) for m in request.messages] == [
        ("system", "be brief", None),
        ("user", "look", None),
        ("assistant", "", None),
        ("tool", "ok", "f"),
    ]
    assert request.messages[2].tool_calls[0].arguments == {"a": 1}
    assert request.tool_choice == "required" and request.think is True
    assert request.tools == [
        {"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}
    ]
    wanted = SamplingParams(temperature=0.2, max_tokens=7, stop=("END",), top_k=5)
    assert request.sampled(SamplingParams()) == wanted
