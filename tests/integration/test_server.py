"""`candor serve` as clients meet it: a real server on loopback, the official ollama and openai clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from live_server import free_port, start_server, stop_server
from near_tie import Greedy, assert_same_up_to_a_near_tie, assert_text_same_up_to_a_near_tie

import candor

MODEL = "gemma-3-270m:Q4_K_M"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("serve-home"))
    yield url
    stop_server(proc)


def test_ollama_client_generate_chat_embed_list_show_ps(server: str) -> None:
    client = ollama.Client(host=server)
    assert [m.model for m in client.list().models] == [MODEL]
    greedy = {"num_predict": 12, "temperature": 0}
    done = client.generate(
        model=MODEL, prompt="Why is the sky blue?", options=greedy, logprobs=True, top_logprobs=20
    )
    # The default model may end its turn early (its fallback format stops at turn markers), build by build.
    assert done.done and done.response and done.eval_count is not None and 0 < done.eval_count <= 12
    assert done.done_reason == ("length" if done.eval_count == 12 else "stop")
    assert done.prompt_eval_count and done.total_duration and done.eval_duration
    again = client.generate(
        model=MODEL, prompt="Why is the sky blue?", options=greedy, logprobs=True, top_logprobs=20
    )
    # Again, the KV of all but the prompt's last token is reused (another batch shape): up to a near-tie.
    assert_same_up_to_a_near_tie(
        Greedy.of_api(done.logprobs or [], ended=done.done_reason == "stop"),
        Greedy.of_api(again.logprobs or [], ended=again.done_reason == "stop"),
    )
    parts = list(
        client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={"num_predict": 8, "seed": 1},
        )
    )
    assert parts[-1].done and parts[-1].eval_count is not None and 0 < parts[-1].eval_count <= 8
    assert parts[-1].done_reason == ("length" if parts[-1].eval_count == 8 else "stop")
    assert all(not p.done for p in parts[:-1])
    embedded = client.embed(model=MODEL, input=["a cat", "a dog"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 640
    shown = client.show(MODEL)
    assert "Gemma Terms of Use" in (shown.license or "")
    assert shown.details.family == "gemma3" and shown.details.quantization_level == "Q4_K_M"
    assert [m.model for m in client.ps().models] == [MODEL]
    version = httpx.get(server + "/api/version").json()
    assert version["candor"] and version["version"]


def test_ollama_copy_delete_and_raw_generate(server: str) -> None:
    client = ollama.Client(host=server)
    client.copy(MODEL, "tiny-copy")
    assert "tiny-copy:latest" in [m.model for m in client.list().models]
    raw = client.generate(
        model="tiny-copy",
        prompt="The capital of France is",
        raw=True,
        options={"num_predict": 5, "temperature": 0},
    )
    assert raw.response
    client.delete("tiny-copy")
    assert "tiny-copy:latest" not in [m.model for m in client.list().models]
    assert "tiny-copy:latest" not in [m.model for m in client.ps().models]  # unloaded with its name
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("tiny-copy")
    assert missing.value.status_code == 404


def test_openai_client_chat_completion_and_embeddings(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    assert MODEL in [m.id for m in client.models.list()]
    greedy: Any = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(model=MODEL, **greedy, logprobs=True, top_logprobs=20)
    choice = whole.choices[0]
    # The default model may end its turn within 10 tokens (its fallback format stops at turn markers).
    assert choice.finish_reason in ("stop", "length") and whole.usage is not None
    assert 0 < whole.usage.completion_tokens <= 10 and whole.id.startswith("chatcmpl-")
    stream = client.chat.completions.create(
        model=MODEL,
        **greedy,
        logprobs=True,
        top_logprobs=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []
    ]
    # Streamed, the KV of all but the prompt's last token is reused (another batch shape): up to a near-tie.
    assert choice.logprobs is not None and choice.logprobs.content is not None
    reference = Greedy.of_api(
        choice.logprobs.content, ended=choice.finish_reason == "stop", text=choice.message.content
    )
    ended = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    parted = assert_same_up_to_a_near_tie(reference, Greedy.of_api(streamed, ended=ended == ["stop"]))
    if parted == len(streamed) == len(reference.pieces):
        assert text == choice.message.content  # the same tokens, the same text
    assert_text_same_up_to_a_near_tie(text, reference)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(streamed)
    # the same prompt again: all but its last token came from the prefix cache, and usage says so
    details = chunks[-1].usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == chunks[-1].usage.prompt_tokens - 1
    completion = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert completion.choices[0].text and completion.usage is not None
    vectors = client.embeddings.create(model=MODEL, input=["one", "two"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 640


@pytest.mark.parametrize(
    "path, body, status",
    [
        ("/api/generate", "{not json", 400),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": 5}), 400),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": "x", "options": {"num_predict": -5}}), 400),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": "x", "options": {"top_k": -1}}), 400),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": "x", "options": {"num_ctx": -1}}), 400),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": "x", "images": ["aGk="]}), 400),
        (
            "/api/chat",
            json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "think": True}),
            400,
        ),
        ("/api/generate", json.dumps({"model": "nope:1b", "prompt": "x"}), 404),
        ("/api/generate", json.dumps({"model": "../../etc/passwd", "prompt": "x"}), 400),
        ("/api/show", json.dumps({"model": "/etc/passwd"}), 400),
        ("/api/generate", json.dumps({"model": "gemma-3-270m-q4_k_m.gguf", "prompt": "x"}), 404),
        ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": []}), 400),
        (
            "/v1/chat/completions",
            json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            400,
        ),
        (
            "/v1/chat/completions",
            json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
        ),
    ],
)
def test_bad_requests_get_4xx_in_each_apis_shape(server: str, path: str, body: str, status: int) -> None:
    answer = httpx.post(server + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    if path.startswith("/v1/"):
        assert isinstance(error, dict) and error["message"] and error["type"]
    else:
        assert isinstance(error, str) and error
    assert httpx.get(server + "/").status_code == 200  # still serving


def test_foreign_host_is_refused(server: str) -> None:
    for host in ("evil.example", "x.local", "x.internal", ""):
        answer = httpx.get(server + "/api/tags", headers={"host": host})
        assert answer.status_code in (400, 403), host
    assert httpx.get(server + "/api/tags", headers={"host": "localhost:11434"}).status_code == 200


def test_a_client_that_disconnects_frees_its_slot(server: str) -> None:
    def metric(name: str) -> float:
        lines = httpx.get(server + "/metrics").text.splitlines()
        return float(next(line for line in lines if line.startswith(name + " ")).split()[1])

    cancelled = metric("candor_requests_cancelled_total")
    # An answer that cannot end by itself (ignore_eos): only the hang-up can end it.
    body = {
        "model": MODEL,
        "prompt": "Tell a long story",
        "max_tokens": 4000,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as response:
        for _ in response.iter_lines():
            break  # first token, then hang up
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and metric("candor_requests_cancelled_total") == cancelled:
        time.sleep(0.1)
    assert metric("candor_requests_active") == 0
    assert metric("candor_requests_cancelled_total") == cancelled + 1
    client = ollama.Client(host=server)
    done = client.generate(model=MODEL, prompt="Hi", options={"num_predict": 3})
    assert done.done and done.eval_count is not None and 0 < done.eval_count <= 3


def test_a_streamed_request_that_fails_before_any_output_gets_its_own_status(server: str) -> None:
    # The runner refuses a prompt longer than a request may use (the default model's 32,768 tokens) before
    # any token: a streamed answer starts with its first chunk, so the error gets a 400, not a 200 and an
    # error line.
    too_long = "word " * 34_000
    with pytest.raises(ollama.ResponseError) as refused:
        list(ollama.Client(host=server).generate(model=MODEL, prompt=too_long, stream=True))
    assert refused.value.status_code == 400 and "shorten the prompt" in str(refused.value)
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": too_long}], stream=True
        )
    assert "shorten the prompt" in str(bad.value)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=too_long, stream=True)
    streamed = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices)  # still serving


def test_api_key_is_required_when_set(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path, "--api-key", "s3cret")
    try:
        assert httpx.get(url + "/").status_code == 200  # Ollama's probe stays open
        assert httpx.get(url + "/api/tags").status_code == 401
        assert httpx.get(url + "/api/tags", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(url + "/api/tags", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        denied = openai.OpenAI(base_url=url + "/v1", api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            denied.models.list()
        allowed = openai.OpenAI(base_url=url + "/v1", api_key="s3cret")
        assert MODEL in [m.id for m in allowed.models.list()]
    finally:
        stop_server(proc)


def test_a_taken_port_is_a_clear_error(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "candor", "serve", "--port", port], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "is taken by another candor" in result.stderr and "Traceback" not in result.stderr


def test_structured_output_with_both_clients(server: str) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    for seed in range(3):
        parsed = client.beta.chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": "Give me a person as JSON."}],
            response_format=Person,
            max_tokens=80,
            seed=seed,
        )
        choice = parsed.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Person)
    loose = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={"type": "json_object"},
        max_tokens=60,
        seed=1,
    )
    if loose.choices[0].finish_reason == "stop":
        json.loads(loose.choices[0].message.content or "")
    cut = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={"type": "json_object"},
        max_tokens=2,
    )
    assert cut.choices[0].finish_reason == "length"

    ollama_client = ollama.Client(host=server)
    answer = ollama_client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "A person, as JSON."}],
        format=Person.model_json_schema(),
        options={"num_predict": 80, "seed": 2},
    )
    assert answer.done_reason == "stop"
    Person.model_validate_json(answer.message.content or "")
    refused = httpx.post(
        server + "/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "format": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}},
        },
    )
    assert refused.status_code == 400 and "minimum" in refused.json()["error"]


def test_candor_ps_and_stop_use_the_running_server(server: str) -> None:
    env = {**os.environ, "CANDOR_HOST": server.removeprefix("http://")}
    httpx.post(
        server + "/api/generate",
        json={"model": MODEL, "prompt": "Hi", "options": {"num_predict": 1}},
        timeout=60,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "candor", "ps"], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0 and MODEL in listed.stdout
    stopped = subprocess.run(
        [sys.executable, "-m", "candor", "stop", MODEL], capture_output=True, text=True, env=env, timeout=60
    )
    assert stopped.returncode == 0, stopped.stderr
    assert MODEL not in [m["name"] for m in httpx.get(server + "/api/ps").json()["models"]]
    nobody = subprocess.run(
        [sys.executable, "-m", "candor", "ps"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CANDOR_HOST": f"127.0.0.1:{free_port()}"},
    )
    assert nobody.returncode == 1 and "no candor server is running" in nobody.stderr


def served(server: str) -> float:
    """Generations the server has finished (its Prometheus counter)."""
    lines = httpx.get(server + "/metrics").text.splitlines()
    return float(next(line for line in lines if line.startswith("candor_requests_total ")).split()[1])


def test_candor_ps_and_stop_take_the_server_from_host(server: str) -> None:
    # The environment points at nobody: --host alone must find the server.
    env = {**os.environ, "CANDOR_HOST": f"127.0.0.1:{free_port()}"}
    host = server.removeprefix("http://")

    def candor(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "candor", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    body = {"model": MODEL, "prompt": "Hi", "options": {"num_predict": 1}}
    httpx.post(server + "/api/generate", json=body, timeout=120)
    listed = candor("ps", "--host", host)
    assert listed.returncode == 0 and MODEL in listed.stdout, listed.stderr
    stopped = candor("stop", MODEL, "--host", server)  # with its scheme, as OLLAMA_HOST may be written
    assert stopped.returncode == 0 and f"stopped {MODEL}" in stopped.stdout, stopped.stderr
    assert MODEL not in [m["name"] for m in httpx.get(server + "/api/ps").json()["models"]]
    nobody = candor("ps")
    assert nobody.returncode == 1
    assert f"no candor server is running at http://{env['CANDOR_HOST']}" in nobody.stderr
    bad = candor("stop", MODEL, "--host", "localhost:port")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "HOST[:PORT]" in bad.stderr
    assert "Traceback" not in bad.stderr
    before = served(server)
    ran = candor("run", "--host", host, "--max-tokens", "2", "Hi")  # the answer comes from that server
    assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    assert served(server) == before + 1
    absent = candor("run", "--host", env["CANDOR_HOST"], "Hi")  # asked for a server: never loads here
    assert absent.returncode == 1 and "no candor server is running at" in absent.stderr


WARM_NS = 100_000_000  # a model already up is "loaded" in microseconds; this allows for a busy machine


def unloaded(client: ollama.Client) -> None:
    """Unload the model (keep_alive 0, as `ollama stop` does), so the next request loads it again."""
    client.generate(model=MODEL, keep_alive=0)
    deadline = time.monotonic() + 30
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.ps().models


def test_load_duration_is_the_time_a_request_waited_for_its_model(server: str) -> None:
    client = ollama.Client(host=server)
    options = {"num_predict": 2, "temperature": 0}
    unloaded(client)
    cold = client.generate(model=MODEL, prompt="Hi", options=options)
    warm = client.generate(model=MODEL, prompt="Hi", options=options)
    assert cold.load_duration and cold.load_duration > 100_000_000  # ns: a runner started for this one
    assert warm.load_duration is not None and warm.load_duration < WARM_NS  # it was up
    assert cold.total_duration and cold.total_duration > cold.load_duration
    unloaded(client)
    messages = [{"role": "user", "content": "Hi"}]
    streamed = list(client.chat(model=MODEL, messages=messages, options=options, stream=True))
    assert streamed[-1].done and streamed[-1].load_duration and streamed[-1].load_duration > 100_000_000
    again = client.chat(model=MODEL, messages=messages, options=options)
    assert again.load_duration is not None and again.load_duration < WARM_NS


def test_embeddings_count_their_tokens_in_both_apis(server: str, gemma: candor.Model) -> None:
    client = ollama.Client(host=server)
    texts = ["a cat", "The dog sat on the mat, twice."]
    read = sum(len(gemma.tokenize(t)) for t in texts)  # the real tokenizer, BOS included
    unloaded(client)
    cold = client.embed(model=MODEL, input=texts)
    assert cold.prompt_eval_count == read and len(cold.embeddings) == 2
    assert cold.load_duration and cold.load_duration > 100_000_000
    assert cold.total_duration and cold.total_duration > cold.load_duration
    warm = client.embed(model=MODEL, input=texts[0])
    assert warm.prompt_eval_count == len(gemma.tokenize(texts[0]))
    assert warm.load_duration is not None and warm.load_duration < WARM_NS
    oai = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    usage = oai.embeddings.create(model=MODEL, input=texts).usage
    assert usage.prompt_tokens == usage.total_tokens == read


def test_ps_describes_loaded_models_as_tags_does(server: str) -> None:
    client = ollama.Client(host=server)
    client.generate(model=MODEL, prompt="Hi", options={"num_predict": 1})
    [listed] = [m for m in httpx.get(server + "/api/tags").json()["models"] if m["name"] == MODEL]
    [loaded] = httpx.get(server + "/api/ps").json()["models"]
    assert loaded["details"] == listed["details"] and loaded["digest"] == listed["digest"]
    assert loaded["details"]["family"] == "gemma3" and loaded["details"]["format"] == "gguf"
    assert {"gpu_layers", "placement", "weights", "cpu_buffers"} <= loaded.keys()  # candor's own stay
    [model] = client.ps().models
    assert model.details is not None and model.details.quantization_level == "Q4_K_M"
    assert model.details.parameter_size == listed["details"]["parameter_size"]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}


def test_a_forced_tool_call_round_trip_with_the_openai_client(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    messages: list[dict[str, object]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=60, seed=1
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=20, seed=1
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        stream=True,
    )
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls and calls[0].function is not None and calls[0].function.name == "get_weather"


def test_a_forced_tool_call_with_the_ollama_client(server: str) -> None:
    client = ollama.Client(host=server)
    answer = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        options={"num_predict": 60, "seed": 3},
    )
    # Without tool_choice (Ollama has none) a small base model may or may not call: either shape is valid.
    if answer.message.tool_calls:
        call = answer.message.tool_calls[0]
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    else:
        assert answer.message.content is not None
    refused = httpx.post(
        server + "/api/chat",
        json={"model": MODEL, "think": True, "messages": [{"role": "user", "content": "x"}]},
    )
    assert refused.status_code == 400 and "cannot think" in refused.json()["error"]


def test_curl_style_bodies_without_a_json_content_type_are_read_as_json(server: str) -> None:
    # `curl URL -d '{...}'` (Ollama's documented examples) sends application/x-www-form-urlencoded.
    for path, body in (
        ("/api/generate", {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}),
        ("/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 2}),
    ):
        for content_type in ("application/x-www-form-urlencoded", None):
            headers = {"content-type": content_type} if content_type else {}
            answer = httpx.post(server + path, content=json.dumps(body), headers=headers, timeout=120)
            assert answer.status_code == 200, answer.text
    refused = httpx.post(server + "/api/generate", content=b"model=x", headers={"content-type": "text/plain"})
    assert refused.status_code == 400 and "error" in refused.json()
