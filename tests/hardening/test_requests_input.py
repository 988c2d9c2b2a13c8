"""Requests a fuzzer misses, against a real `candor serve` on the real default model: out-of-range numbers
in every numeric field, 100 MB bodies, invalid UTF-8, deep nesting, pathological JSON schemas and
grammars. Each is a fast 4xx in the right API's shape; no runner dies; the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import start_server, stop_server

MODEL = "gemma-3-270m:Q4_K_M"
HUGE = [10**30, -(10**30), 2**63, -(2**63), 1e308, -1e308]
FAST = 5.0  # seconds a refusal may take, on a busy 2-core CI machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("input-home"))
    httpx.post(url + "/api/generate", json={"model": MODEL}, timeout=120)  # load once
    yield url
    crashes = metric(url, "candor_runner_crashes_total")
    stop_server(proc)
    assert crashes == 0, "a runner died during these tests"


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def post(url: str, path: str, body: Any, timeout: float = 60) -> tuple[httpx.Response, float]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    start = time.monotonic()
    answer = httpx.post(
        url + path, content=content, headers={"content-type": "application/json"}, timeout=timeout
    )
    return answer, time.monotonic() - start


def assert_refused(answer: httpx.Response, seconds: float, path: str, status: int = 400) -> None:
    assert answer.status_code == status, answer.text[:300]
    assert seconds < FAST, f"took {seconds:.1f}s"
    error = answer.json()["error"]
    if path.startswith("/v1/"):
        assert isinstance(error, dict) and error["message"] and error["type"]
    else:
        assert isinstance(error, str) and error


OLLAMA_OPTIONS = [
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
    "presence_penalty", "frequency_penalty", "seed", "num_predict", "num_ctx",
]  # fmt: skip
OPENAI_FIELDS = [
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty",
    "seed", "n", "top_k", "min_p", "repeat_penalty", "top_logprobs",
]  # fmt: skip


@pytest.mark.parametrize("name", OLLAMA_OPTIONS)
def test_huge_and_negative_ollama_options_are_400(server: str, name: str) -> None:
    for value in HUGE:
        for path, body in (
            ("/api/generate", {"model": MODEL, "prompt": "Hi", "stream": False}),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": False}),
        ):
            options = {"num_predict": 2, name: value}
            answer, seconds = post(server, path, {**body, "options": options})
            assert_refused(answer, seconds, path)


@pytest.mark.parametrize("name", ["top_logprobs", "keep_alive"])
def test_huge_top_level_ollama_numbers_are_400(server: str, name: str) -> None:
    for value in HUGE:
        body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
        answer, seconds = post(server, "/api/generate", {**body, "logprobs": True, name: value})
        if name == "keep_alive" and value < 0:
            assert answer.status_code == 200  # negative keeps the model loaded forever, as in Ollama
        else:
            assert_refused(answer, seconds, "/api/generate")


@pytest.mark.parametrize("name", OPENAI_FIELDS)
def test_huge_and_negative_openai_numbers_are_400(server: str, name: str) -> None:
    for value in HUGE:
        body: dict[str, Any] = {"model": MODEL, "max_tokens": 2, "logprobs": True, name: value}
        chat = {**body, "messages": [{"role": "user", "content": "Hi"}]}
        answer, seconds = post(server, "/v1/chat/completions", chat)
        assert_refused(answer, seconds, "/v1/")
        if name != "top_logprobs" and name != "max_completion_tokens":
            text = {**body, "prompt": "Hi", "logprobs": None}
            answer, seconds = post(server, "/v1/completions", text)
            assert_refused(answer, seconds, "/v1/")
    for value in HUGE:
        answer, seconds = post(server, "/v1/completions", {"model": MODEL, "prompt": "Hi", "logprobs": value})
        assert_refused(answer, seconds, "/v1/")


def raw_request(url: str, head: str, send: Iterator[bytes], limit: float = 20) -> tuple[bytes, int]:
    """Send a request over a plain socket, body piece by piece, until the server answers; return the
    answer and how many body bytes went out before it did."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + limit
        for piece in send:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if answer:
                break
            try:
                sock.setblocking(True)
                sock.settimeout(2)
                sock.sendall(piece)
                sent += len(piece)
                sock.setblocking(False)
            except OSError:
                break
            assert time.monotonic() < deadline, "the server neither read nor refused the body"
        sock.setblocking(True)
        sock.settimeout(limit)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    return answer, sent


def test_a_100_mb_body_is_refused_by_its_length_without_reading_it(server: str) -> None:
    size = 100 * 1024 * 1024
    for path in ("/api/chat", "/v1/chat/completions"):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        start = time.monotonic()
        answer, sent = raw_request(server, head, iter([b"x" * 65536] * (size // 65536)))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 8 * 1024 * 1024 and time.monotonic() - start < FAST  # refused, not read
    assert httpx.get(server + "/api/tags", timeout=10).status_code == 200


def test_a_chunked_100_mb_body_is_cut_off_at_the_cap(server: str) -> None:
    head = (
        "POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * (1 << 20)
    chunks = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(100))
    answer, sent = raw_request(server, head, chunks, limit=60)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 48 * (1 << 20)  # the 32 MiB cap, plus what the sockets buffer
    assert httpx.get(server + "/api/tags", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/generate", b'{"model": "gemma\xff\xfe", "prompt": "x"}'),
        ("/api/chat", b'{"model": "m", "messages": [{"role": "user", "content": "\xc3\x28"}]}'),
        (
            "/v1/chat/completions",
            b'{"model": "m", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        ),
        ("/api/generate", b"\xef\xbb\xbf\x00\x00\x00"),
        ("/api/generate", ('{"model": "' + MODEL + '", "prompt": "\\ud800 hi", "stream": false}').encode()),
        (
            "/api/chat",
            ('{"model": "' + MODEL + '", "messages": [{"role": "user", "content": "a\\udfff"}]}').encode(),
        ),
        (
            "/v1/chat/completions",
            ('{"model": "' + MODEL + '", "messages": [{"role": "user", "content": "\\udc00"}]}').encode(),
        ),
        ("/v1/completions", ('{"model": "' + MODEL + '", "prompt": "x", "stop": ["\\ud800"]}').encode()),
        ("/api/embed", ('{"model": "' + MODEL + '", "input": ["\\ud800"]}').encode()),
        ("/v1/embeddings", ('{"model": "' + MODEL + '", "input": "\\ud83d"}').encode()),
        ("/api/generate", b'{"model": "\\ud800", "prompt": "x"}'),
    ],
)
def test_invalid_utf8_and_lone_surrogates_are_400(server: str, path: str, body: bytes) -> None:
    answer, seconds = post(server, path, body)
    assert_refused(answer, seconds, path)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/generate", b"[" * 100_000 + b"]" * 100_000),
        ("/v1/chat/completions", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        ("/api/chat", b'{"model": "m", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ],
)
def test_deeply_nested_json_is_400(server: str, path: str, body: bytes) -> None:
    answer, seconds = post(server, path, body)
    assert_refused(answer, seconds, path)


def nested_objects(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


PATHOLOGICAL = {
    "deep recursion": nested_objects(300),
    "self reference": {"$ref": "#"},
    "reference loop": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    },
    "remote reference": {"$ref": "http://127.0.0.1:9/schema.json"},
    "file reference": {"$ref": "file:///etc/passwd"},
    "huge enum": {"enum": [f"value-{i}" for i in range(100_000)]},
    "huge numeric enum": {"type": "object", "properties": {"a": {"enum": list(range(100_000))}}},
    "huge anyOf": {"anyOf": [{"const": i} for i in range(50_000)]},
    "huge minItems": {"type": "array", "items": {"type": "integer"}, "minItems": 100_000},
    "huge object": {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(20_000)},
        "required": [f"p{i}" for i in range(20_000)],
    },
    "not a schema": {"type": "no-such-type"},
}


@pytest.mark.parametrize("kind", list(PATHOLOGICAL))
def test_pathological_schemas_are_refused_fast(server: str, kind: str) -> None:
    schema = PATHOLOGICAL[kind]
    messages = [{"role": "user", "content": "JSON please"}]
    answer, seconds = post(
        server,
        "/api/chat",
        {"model": MODEL, "messages": messages, "format": schema, "options": {"num_predict": 4}},
    )
    assert_refused(answer, seconds, "/api/chat")
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    answer, seconds = post(
        server,
        "/v1/chat/completions",
        {"model": MODEL, "messages": messages, "response_format": response_format, "max_tokens": 4},
    )
    assert_refused(answer, seconds, "/v1/")


def test_pathological_grammars_are_refused_before_a_runner_parses_them(server: str) -> None:
    messages = [{"role": "user", "content": "x"}]
    for grammar in (
        "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000,  # llama.cpp's parser recurses per group
        "root ::= " + " | ".join(f'"w{i}"' for i in range(50_000)),
        "root ::= root",
        "((((",
    ):
        answer, seconds = post(
            server, "/v1/chat/completions", {"model": MODEL, "messages": messages, "grammar": grammar}
        )
        assert_refused(answer, seconds, "/v1/")
        answer, seconds = post(
            server,
            "/api/generate",
            {
                "model": MODEL,
                "prompt": "x",
                "stream": False,
                "options": {"grammar": grammar, "num_predict": 2},
            },
        )
        assert_refused(answer, seconds, "/api/generate")


def test_a_reasonable_schema_still_works(server: str) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": [f"c{i}" for i in range(50)]}},
        "required": ["colour"],
    }
    answer, _ = post(
        server,
        "/api/chat",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "A colour"}],
            "format": schema,
            "stream": False,
        },
    )
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["message"]["content"])["colour"].startswith("c")


def test_unknown_routes_and_methods_answer_in_each_apis_shape(server: str) -> None:
    assert httpx.get(server + "/api/nothing", timeout=10).json() == {"error": "Not Found"}
    wrong = httpx.get(server + "/api/generate", timeout=10)
    assert wrong.status_code == 405 and isinstance(wrong.json()["error"], str)
    missing = httpx.get(server + "/v1/nothing", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_a_client_that_gives_up_on_a_whole_answer_frees_its_slot(server: str) -> None:
    cancelled = metric(server, "candor_requests_cancelled_total")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell a very long story"}],
        "max_tokens": 100_000,
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server + "/v1/chat/completions", json=body, timeout=2)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and metric(server, "candor_requests_active") > 0:
        time.sleep(0.1)
    assert metric(server, "candor_requests_active") == 0
    assert metric(server, "candor_requests_cancelled_total") == cancelled + 1
