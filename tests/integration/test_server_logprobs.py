"""Log-probabilities on both APIs, read by the official openai and ollama clients from a real server."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import ollama
import openai
import pytest
from live_server import start_server, stop_server
from near_tie import Greedy, assert_same_up_to_a_near_tie, ranked
from test_server import MODEL


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("serve-logprobs"))
    yield url
    stop_server(proc)


def check_entries(entries: Sequence[Any], tokens: int, top: int, *, greedy: bool) -> None:
    """One entry per completion token, each a log-probability, its alternatives sorted."""
    assert len(entries) == tokens
    for entry in entries:
        assert entry.logprob <= 0 and math.isfinite(entry.logprob)
        alternatives = entry.top_logprobs or []
        assert len(alternatives) == top
        values = [t.logprob for t in alternatives]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        same = [t.logprob for t in alternatives if t.token == entry.token]
        if same:
            assert same[0] == pytest.approx(entry.logprob, abs=1e-6)
        if greedy and alternatives:
            assert alternatives[0].token == entry.token  # temperature 0 picks the likeliest
            assert entry.logprob == pytest.approx(alternatives[0].logprob, abs=1e-6)


def legacy(tokens: Sequence[str], tops: Sequence[dict[str, float]], finish: str | None) -> Greedy:
    """A legacy completion's logprobs (token texts, and a {token: logprob} of the likeliest at each step)."""
    return Greedy(
        tuple(t.encode() for t in tokens),
        tuple(ranked((t.encode(), lp) for t, lp in top.items()) for top in tops),
        ended=finish == "stop",
    )


def test_openai_chat_logprobs_whole_and_streamed(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, temperature=0, logprobs=True, top_logprobs=5
    )
    choice = whole.choices[0]
    assert whole.usage is not None and choice.logprobs is not None and choice.logprobs.content is not None
    check_entries(choice.logprobs.content, whole.usage.completion_tokens, 5, greedy=True)
    assert all(
        bytes(e.bytes or []).decode("utf-8", errors="replace") == e.token for e in choice.logprobs.content
    )
    assert "".join(e.token for e in choice.logprobs.content).startswith((choice.message.content or "")[:4])

    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []
    ]
    usage = chunks[-1].usage
    assert usage is not None
    check_entries(streamed, usage.completion_tokens, 2, greedy=True)
    # Streamed, the KV of all but the prompt's last token is reused (another batch shape): up to a near-tie.
    finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    assert_same_up_to_a_near_tie(
        Greedy.of_api(choice.logprobs.content, ended=choice.finish_reason == "stop"),
        Greedy.of_api(streamed, ended=finish == "stop"),
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content) > 1

    bare = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=6, logprobs=True, seed=3
    )  # no top_logprobs: each token's own only, at the default temperature
    assert bare.usage is not None and bare.choices[0].logprobs is not None
    check_entries(bare.choices[0].logprobs.content or [], bare.usage.completion_tokens, 0, greedy=False)
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    assert plain.choices[0].logprobs is None


def test_openai_legacy_completion_logprobs(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    prompt = "The capital of France is"
    done = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=3)
    choice, usage = done.choices[0], done.usage
    assert usage is not None and choice.logprobs is not None
    lp = choice.logprobs
    assert lp.tokens is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == usage.completion_tokens
    assert "".join(lp.tokens).startswith(choice.text)
    offsets = lp.text_offset or []
    assert offsets[0] == len(prompt) and offsets == sorted(offsets)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and top[token] == pytest.approx(logprob)
        assert max(top.values()) == pytest.approx(logprob)  # greedy: the sampled token is the likeliest
        assert 1 <= len(top) <= 4
    streamed = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=3, stream=True
    )
    tokens, tops, offsets_streamed, finish = [], [], [], None
    for chunk in streamed:
        finish = chunk.choices[0].finish_reason or finish
        if chunk.choices[0].logprobs is not None:
            tokens += chunk.choices[0].logprobs.tokens or []
            tops += chunk.choices[0].logprobs.top_logprobs or []
            offsets_streamed += chunk.choices[0].logprobs.text_offset or []
    # Streamed, the KV of all but the prompt's last token is reused (another batch shape): up to a near-tie.
    parted = assert_same_up_to_a_near_tie(
        legacy(lp.tokens, lp.top_logprobs, choice.finish_reason), legacy(tokens, tops, finish)
    )
    assert offsets_streamed[: parted + 1] == offsets[: parted + 1]


def test_ollama_generate_and_chat_logprobs(server: str) -> None:
    client = ollama.Client(host=server)
    done = client.generate(
        model=MODEL,
        prompt="Why is the sky blue?",
        options={"num_predict": 10, "temperature": 0},
        logprobs=True,
        top_logprobs=4,
    )
    # The default model may end its turn early (its fallback format stops at turn markers), build by build.
    assert done.eval_count is not None and 0 < done.eval_count <= 10 and done.logprobs is not None
    check_entries(done.logprobs, done.eval_count, 4, greedy=True)
    assert "".join(e.token for e in done.logprobs).startswith(done.response[:3])
    parts = list(
        client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={"num_predict": 10, "temperature": 0},
            logprobs=True,
            top_logprobs=1,
        )
    )
    entries = [e for p in parts for e in (p.logprobs or [])]
    assert parts[-1].eval_count is not None
    check_entries(entries, parts[-1].eval_count, 1, greedy=True)
    whole = client.chat(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 5}, logprobs=True
    )
    assert whole.logprobs is not None and len(whole.logprobs) == whole.eval_count
    assert all(not e.top_logprobs for e in whole.logprobs)
    assert client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2}).logprobs is None


@pytest.mark.parametrize(
    "path, extra",
    [
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": -1}),
        ("/v1/chat/completions", {"top_logprobs": 3}),  # without logprobs: true
        ("/v1/chat/completions", {"logprobs": 5}),
        ("/v1/completions", {"logprobs": 21}),
        ("/v1/completions", {"logprobs": -1}),
        ("/api/chat", {"logprobs": True, "top_logprobs": 99}),
        ("/api/generate", {"logprobs": True, "top_logprobs": -2}),
        ("/api/generate", {"top_logprobs": 2}),
    ],
)
def test_logprobs_out_of_range_are_400(server: str, path: str, extra: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 2, "options": {"num_predict": 2}, **extra}
    if path.endswith("chat/completions") or path == "/api/chat":
        body["messages"] = [{"role": "user", "content": "Hi"}]
    else:
        body["prompt"] = "Hi"
    answer = httpx.post(server + path, json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    assert "logprobs" in answer.text
