"""Reasoning streams as the model writes it: OpenAI's reasoning_content and Ollama's thinking, incrementally.

Reply texts go through the server's stream reader and SSE writer directly; then a real server runs tiny
models whose chat templates think (one where the model opens <think>, one where the prompt does), their
replies shaped by a grammar, read by the official clients.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from gguf_factory import write_tiny_llama
from live_server import import_into, start_server, stop_server

from candor.cli.chat_backends import ServerChat
from candor.pipeline import ReplyPlan, ReplyReader
from candor.prompt.replies import parse_reply, reply_format, split_thinking
from candor.scheduler import RequestHandle
from candor.server.openai.routes import ChatStream
from candor.server.streaming import chunks_of, reply_events
from candor.types import Chunk, FinishReason, Message, SamplingParams, Usage

THOUGHT = "hello the world " * 12
ANSWER = "hello and the end"
CALL = '{"name": "get_weather", "arguments": {"city": "oslo"}}'
# The model writes <think> itself (Qwen3's way); enable_thinking=false closes it in the prompt. Like
# Qwen3's, the template takes `tools` (it lists their names), so candor adds no tool description of its own.
OPENS = (
    "{% if tools %}<|tools|>{% for t in tools %}{{ t.function.name }}{% endfor %}\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}"
    "<|assistant|>{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
    "{% endif %}"
)
# The prompt opens <think> and the reply starts inside it (DeepSeek-R1 distills).
STARTED = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def plan(*, thinking: bool = True, tools: bool = False) -> ReplyPlan:
    return ReplyPlan([TOOL] if tools else None, None, thinking, {})


def pushed(reader: ReplyReader, pieces: list[str]) -> tuple[list[str], list[str], Any]:
    """Read pieces as chunks; return what could be sent after each (thinking, content) and the last
    event (an empty final chunk: what the end released)."""
    thoughts, contents = [], []
    for piece in pieces:
        out = reader.read(Chunk(piece))
        thoughts.append(out.thinking)
        contents.append(out.text)
    return thoughts, contents, reader.read(Chunk("", finish_reason=FinishReason.STOP))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(
    "text, started",
    [
        (f"<think>{THOUGHT}</think>{ANSWER}", False),
        (f"{THOUGHT}</think>\n\n{ANSWER}", True),
        (ANSWER, False),
        (f"<think>{THOUGHT}", False),  # cut by the token limit while thinking
    ],
)
def test_the_stream_reader_agrees_with_the_whole_reply_at_any_chunking(
    text: str, started: bool, size: int
) -> None:
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    thoughts, contents, rest = pushed(ReplyReader(plan(), None, started=started), pieces)
    thinking = "".join(thoughts) + (rest.thinking or "")
    content = "".join(contents) + rest.text
    expected_thinking, expected_content = split_thinking(text)
    assert thinking.strip() == (expected_thinking or "")
    assert content == expected_content
    if expected_thinking and size < len(text):
        # Reasoning goes out while it is written, not at the end: before the last piece arrives.
        assert "".join(thoughts[:-1]).strip()


def test_with_tools_reasoning_streams_and_the_call_is_read_at_the_end() -> None:
    text = f"<think>{THOUGHT}</think>{CALL}"
    fmt = reply_format(None)
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    thoughts, contents, rest = pushed(ReplyReader(plan(tools=True), None), pieces)
    assert "".join(thoughts[: len(THOUGHT) // 4]).strip()  # reasoning left before the call was written
    assert not any(contents)  # a tool call's text never shows as content
    whole = parse_reply(text, fmt, thinking=True)
    assert [c.name for c in rest.tool_calls] == [c.name for c in whole.tool_calls] == ["get_weather"]
    assert rest.tool_calls[0].arguments == {"city": "oslo"} and rest.text.strip() == ""


def test_sse_events_carry_reasoning_content_deltas_then_content() -> None:
    pieces = ["<thi", "nk>hello", " the world", "</th", "ink>hello", " and the end"]

    async def run() -> list[dict[str, Any]]:
        handle = RequestHandle(1, "m", lambda _id: None)

        async def produce() -> None:
            for i, piece in enumerate(pieces):
                await asyncio.sleep(0.01)  # one chunk at a time, as a runner's steps arrive
                last = i == len(pieces) - 1
                handle.deliver(
                    Chunk(
                        piece,
                        finish_reason=FinishReason.STOP if last else None,
                        usage=Usage(3, 6) if last else None,
                    )
                )

        async def consume() -> list[bytes]:
            stream = ChatStream("chatcmpl-x", "m", 0, logprobs=False, include_usage=True)
            reader = ReplyReader(plan(), None)
            return [e async for e in stream.events(reply_events(chunks_of(handle), reader))]

        _, events = await asyncio.gather(produce(), consume())
        assert events[-1] == b"data: [DONE]\n\n"
        return [json.loads(e[len(b"data: ") :]) for e in events[:-1]]

    events = asyncio.run(run())
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hello the world"
    assert "".join(d.get("content", "") for d in deltas) == "hello and the end"
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all(not d.get("content") for d in deltas[:first_content])
    assert sum(1 for d in deltas[:first_content] if d.get("reasoning_content")) >= 2
    assert events[-1]["usage"]["completion_tokens"] == 6


def grammar(*, opened: bool, tail: str = ANSWER, repeats: int = 12) -> str:
    parts = [] if opened else ['"<think>"']
    parts += [f'("hello the world " ){{{repeats}}}', '"</think>"', json.dumps(tail)]
    return "root ::= " + " ".join(parts)


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose store holds two tiny thinking models (32 layers: slow enough to stream in steps)."""
    home = tmp_path_factory.mktemp("serve-think")
    for name, template in (("opens:tiny", OPENS), ("started:tiny", STARTED)):
        path = write_tiny_llama(home / f"{name.split(':')[0]}.gguf", chat_template=template, n_layers=32)
        import_into(home / "candor", path, name)
    proc, url = start_server(home / "candor")
    yield url
    stop_server(proc)


def test_openai_streams_reasoning_content_as_it_is_written(thinking_server: str) -> None:
    client = openai.OpenAI(base_url=thinking_server + "/v1", api_key="unused")
    for model, opened in (("opens:tiny", False), ("started:tiny", True)):
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=200,
            stream=True,
            extra_body={"grammar": grammar(opened=opened)},
        )
        deltas = [c.choices[0].delta for c in stream if c.choices]
        reasoning = [getattr(d, "reasoning_content", None) or "" for d in deltas]
        content = [d.content or "" for d in deltas]
        assert "".join(reasoning).strip() == THOUGHT.strip(), model
        assert "".join(content) == ANSWER and "think>" not in "".join(content)
        first_content = next(i for i, c in enumerate(content) if c)
        assert sum(1 for r in reasoning[:first_content] if r) >= 2, model  # in steps, before the answer
        whole = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=200,
            extra_body={"grammar": grammar(opened=opened)},
        )
        message = whole.choices[0].message
        assert getattr(message, "reasoning_content", None) == THOUGHT.strip()
        assert message.content == ANSWER


def test_openai_streams_reasoning_then_a_tool_call(thinking_server: str) -> None:
    client = openai.OpenAI(base_url=thinking_server + "/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="opens:tiny",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[TOOL],  # type: ignore[list-item]
        max_tokens=220,
        stream=True,
        extra_body={"grammar": grammar(opened=False, tail=CALL, repeats=6)},
    )
    chunks = [c for c in stream if c.choices]
    reasoning = [getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks]
    assert (
        sum(1 for r in reasoning if r) >= 2
        and "".join(reasoning).strip() == THOUGHT[: len(THOUGHT) // 2].strip()
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function is not None
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments or "") == {
        "city": "oslo"
    }
    assert not "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_ollama_streams_thinking_as_it_is_written(thinking_server: str) -> None:
    client = ollama.Client(host=thinking_server)
    for model, opened in (("opens:tiny", False), ("started:tiny", True)):
        parts = list(
            client.chat(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                think=True,
                options={"num_predict": 200, "grammar": grammar(opened=opened)},
            )
        )
        thinking = [p.message.thinking or "" for p in parts]
        content = [p.message.content or "" for p in parts]
        assert "".join(thinking).strip() == THOUGHT.strip() and "".join(content) == ANSWER, model
        first_content = next(i for i, c in enumerate(content) if c)
        assert sum(1 for t in thinking[:first_content] if t) >= 2, model
        whole = client.chat(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            options={"num_predict": 200, "grammar": grammar(opened=opened)},
        )
        assert whole.message.thinking == THOUGHT.strip() and whole.message.content == ANSWER


def test_ollama_generate_streams_thinking_too(thinking_server: str) -> None:
    client = ollama.Client(host=thinking_server)
    for model, opened in (("opens:tiny", False), ("started:tiny", True)):
        options = {"num_predict": 200, "grammar": grammar(opened=opened)}
        parts = list(client.generate(model=model, prompt="hi", stream=True, think=True, options=options))
        thinking = [p.thinking or "" for p in parts]
        response = [p.response or "" for p in parts]
        assert "".join(thinking).strip() == THOUGHT.strip() and "".join(response) == ANSWER, model
        first_answer = next(i for i, r in enumerate(response) if r)
        assert sum(1 for t in thinking[:first_answer] if t) >= 2, model  # in steps, before the answer
        whole = client.generate(model=model, prompt="hi", think=True, options=options)
        assert whole.thinking == THOUGHT.strip() and whole.response == ANSWER, model
    raw = httpx.post(
        thinking_server + "/api/generate",
        json={"model": "opens:tiny", "prompt": "hi", "raw": True, "think": True},
        timeout=60,
    )
    assert raw.status_code == 400 and "raw" in raw.json()["error"]


def test_the_chat_through_a_server_shows_the_reasoning_apart_from_the_answer(thinking_server: str) -> None:
    # `candor run`'s interactive chat against a server: reasoning to stderr as it streams, answer to stdout.
    reasoning = io.StringIO()
    backend = ServerChat(thinking_server, "opens:tiny", thinking_out=reasoning)
    options = {"num_predict": 200, "grammar": grammar(opened=False)}
    chunks = list(backend.answer([Message("user", "hi")], SamplingParams(), options, raw=False))
    assert "".join(c.text for c in chunks) == ANSWER
    assert reasoning.getvalue().strip() == THOUGHT.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_think_on_a_model_that_cannot_think_stays_a_400(thinking_server: str) -> None:
    answer = httpx.post(
        thinking_server + "/api/chat",
        json={"model": "gemma-3-270m:Q4_K_M", "think": True, "messages": [{"role": "user", "content": "x"}]},
        timeout=60,
    )
    assert answer.status_code == 400 and "cannot think" in answer.json()["error"]
    answer = httpx.post(
        thinking_server + "/api/generate",
        json={"model": "gemma-3-270m:Q4_K_M", "think": True, "prompt": "x"},
        timeout=60,
    )
    assert answer.status_code == 400 and "cannot think" in answer.json()["error"]


def test_anthropic_thinking_blocks_come_before_the_text_whole_and_streamed(thinking_server: str) -> None:
    client = anthropic.Anthropic(base_url=thinking_server, api_key="unused", max_retries=0)
    for model, opened in (("opens:tiny", False), ("started:tiny", True)):
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 150},
            "extra_body": {"grammar": grammar(opened=opened)},
        }
        whole = client.messages.create(**request)
        assert [b.type for b in whole.content] == ["thinking", "text"], model
        assert whole.content[0].thinking.strip() == THOUGHT.strip()  # type: ignore[union-attr]
        assert whole.content[1].text == ANSWER  # type: ignore[union-attr]
        with client.messages.stream(**request) as stream:
            kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in stream]
            streamed = stream.get_final_message()
        deltas = [d for t, d in kinds if t == "content_block_delta"]
        assert deltas.count("thinking_delta") >= 2 and deltas.index("signature_delta") < deltas.index(
            "text_delta"
        )
        assert [b.type for b in streamed.content] == ["thinking", "text"]
        assert streamed.content[0].thinking.strip() == THOUGHT.strip()  # type: ignore[union-attr]
        assert streamed.content[1].text == ANSWER  # type: ignore[union-attr]


def test_anthropic_budget_tokens_ends_the_reasoning_and_the_answer_follows(thinking_server: str) -> None:
    client = anthropic.Anthropic(base_url=thinking_server, api_key="unused", max_retries=0)

    def ask(budget: int) -> Any:
        return client.messages.create(
            model="started:tiny",  # the reply starts inside <think>, and this model never closes it itself
            max_tokens=40,
            messages=[{"role": "user", "content": "hi"}],
            thinking={"type": "enabled", "budget_tokens": budget},
            extra_body={"temperature": 0},
        )

    free, capped = ask(1000), ask(10)
    assert [b.type for b in free.content] == ["thinking"] and free.usage.output_tokens == 40
    assert [b.type for b in capped.content] == ["thinking", "text"] and capped.usage.output_tokens == 40
    thought = capped.content[0].thinking.strip()  # type: ignore[union-attr]
    # the same greedy reasoning, cut after its 10th token; the engine wrote </think>, the model went on
    assert thought and free.content[0].thinking.strip().startswith(thought)  # type: ignore[union-attr]
    # (one character per token: the tiny vocabulary's tokens are single bytes)
    assert len(thought) <= 10 < len(free.content[0].thinking.strip())  # type: ignore[union-attr]
    assert capped.content[1].text  # type: ignore[union-attr]
    with client.messages.stream(
        model="started:tiny",
        max_tokens=40,
        messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "enabled", "budget_tokens": 10},
        extra_body={"temperature": 0},
    ) as stream:
        streamed = stream.get_final_message()
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in capped.content]
    # llama-server's field on chat completions does the same
    chat = openai.OpenAI(base_url=thinking_server + "/v1", api_key="unused", max_retries=0)
    answer = (
        chat.chat.completions.create(
            model="started:tiny",
            max_tokens=40,
            messages=[{"role": "user", "content": "hi"}],
            temperature=0,
            extra_body={"reasoning_budget_tokens": 10},
        )
        .choices[0]
        .message
    )
    assert answer.reasoning_content.strip() == thought and answer.content  # type: ignore[attr-defined]
    bad = httpx.post(
        thinking_server + "/v1/messages",
        json={"model": "started:tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
              "thinking": {"type": "enabled", "budget_tokens": -1}},
        timeout=60,
    )  # fmt: skip
    assert bad.status_code == 400 and "budget_tokens" in bad.json()["error"]["message"]


def test_responses_reasoning_items_come_before_the_message_whole_and_streamed(thinking_server: str) -> None:
    client = openai.OpenAI(base_url=thinking_server + "/v1", api_key="unused", max_retries=0)
    for model, opened in (("opens:tiny", False), ("started:tiny", True)):
        request: dict[str, Any] = {
            "model": model,
            "input": "hi",
            "reasoning": {"effort": "high"},
            "max_output_tokens": 200,
            "extra_body": {"grammar": grammar(opened=opened)},
        }
        whole = client.responses.create(**request)
        assert [item.type for item in whole.output] == ["reasoning", "message"], model
        assert whole.output[0].content[0].text.strip() == THOUGHT.strip()  # type: ignore[union-attr,index]
        assert whole.output_text == ANSWER
        with client.responses.stream(**request) as stream:
            kinds = [e.type for e in stream]
            streamed = stream.get_final_response()
        assert kinds.count("response.reasoning_text.delta") >= 2
        assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
        assert [item.type for item in streamed.output] == ["reasoning", "message"]
        assert streamed.output_text == ANSWER
