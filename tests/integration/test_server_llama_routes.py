"""llama-server's utility routes, as editor plugins call them: a real `candor serve` on the default model."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from live_server import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("llama-routes-home"))
    yield url
    stop_server(proc)


def post(server: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server + path, json=body, timeout=120)


def test_tokenize_and_detokenize_round_trip_with_pieces(server: str) -> None:
    text = "Hello world, naïve café"
    tokens = post(server, "/tokenize", {"content": text}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert post(server, "/detokenize", {"tokens": tokens}).json() == {"content": text}
    with_bos = post(server, "/tokenize", {"content": text, "add_special": True}).json()["tokens"]
    assert len(with_bos) == len(tokens) + 1 and with_bos[1:] == tokens
    pieces = post(server, "/tokenize", {"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens
    assert "".join(p["piece"] for p in pieces if isinstance(p["piece"], str)) == text
    control = post(server, "/tokenize", {"content": "<start_of_turn>"}).json()["tokens"]
    assert len(control) == 1  # parse_special, as llama-server defaults
    refused = post(server, "/detokenize", {"tokens": [1, 10**9]})
    assert refused.status_code == 400 and "token ids" in refused.json()["error"]


def test_apply_template_shows_the_prompt_chat_renders(server: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    prompt = post(server, "/apply-template", {"messages": messages}).json()["prompt"]
    assert "Be brief." in prompt and "Hi there" in prompt
    assert prompt.index("Be brief.") < prompt.index("Hi there")
    # what /apply-template shows is what a chat request sends: the same number of prompt tokens
    counted = len(post(server, "/tokenize", {"content": prompt, "add_special": True}).json()["tokens"])
    chat = post(
        server,
        "/v1/chat/completions",
        {"model": "gemma-3-270m:Q4_K_M", "messages": messages, "max_tokens": 1},
    ).json()
    assert chat["usage"]["prompt_tokens"] in (counted, counted - 1)  # one BOS, whether or not it is written
