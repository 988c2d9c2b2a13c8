"""The server's store and operations routes: /api/pull from a local hub, /api/create, /metrics, body cap."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import ollama
import pytest
from gguf_factory import write_tiny_llama
from hf_hub_server import FakeFile, FakeRepo, running_hub
from live_server import start_server, stop_server
from test_server import MODEL


@pytest.fixture(scope="module")
def hub_and_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = write_tiny_llama(tmp_path_factory.mktemp("blob") / "m.gguf").read_bytes()
    repo = FakeRepo(
        "org/tiny-GGUF",
        {
            "tiny-Q8_0.gguf": FakeFile("tiny-Q8_0.gguf", data),
            "LICENSE": FakeFile("LICENSE", b"MIT License\n", lfs=False),
        },
    )
    bad = FakeRepo("org/bad-GGUF", {"bad-Q4_K_M.gguf": FakeFile("bad-Q4_K_M.gguf", data, served=data[::-1])})
    home = tmp_path_factory.mktemp("serve-store")
    with running_hub(repo, bad) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        os.environ["HF_HOME"] = str(home / "hf")
        try:
            proc, url = start_server(home / "candor")
        finally:
            del os.environ["HF_ENDPOINT"], os.environ["HF_HOME"]
        try:
            yield hub.url, url
        finally:
            stop_server(proc)


def test_pull_streams_progress_and_the_model_runs(hub_and_server: tuple[str, str]) -> None:
    _, server = hub_and_server
    client = ollama.Client(host=server)
    statuses = [p.status for p in client.pull("hf.co/org/tiny-GGUF:Q8_0", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any("verifying" in (s or "") for s in statuses)
    assert "hf.co/org/tiny-GGUF:Q8_0" in [m.model for m in client.list().models]
    done = client.generate(
        model="hf.co/org/tiny-GGUF:Q8_0", prompt="hello", raw=True, options={"num_predict": 3}
    )
    assert done.eval_count == 3
    shown = client.show("hf.co/org/tiny-GGUF:Q8_0")
    assert "MIT License" in (shown.license or "")


def test_a_corrupt_download_is_an_error_and_never_listed(hub_and_server: tuple[str, str]) -> None:
    _, server = hub_and_server
    lines = [
        json.loads(x)
        for x in httpx.post(
            server + "/api/pull", json={"model": "hf.co/org/bad-GGUF"}, timeout=120
        ).text.splitlines()
    ]
    assert "sha256" in lines[-1]["error"]
    models = httpx.get(server + "/api/tags").json()["models"]
    assert all("bad-GGUF" not in m["name"] for m in models)
    registry_name = httpx.post(server + "/api/pull", json={"model": "llama3.2", "stream": False})
    assert registry_name.status_code == 400 and "Hugging Face" in registry_name.json()["error"]


def test_create_gives_a_model_its_own_system_prompt_and_parameters(hub_and_server: tuple[str, str]) -> None:
    _, server = hub_and_server
    client = ollama.Client(host=server)
    client.create(model="terse", from_=MODEL, system="Answer in one word.", parameters={"num_predict": 4})
    shown = client.show("terse")
    assert "num_predict 4" in (shown.parameters or "")
    raw = httpx.post(server + "/api/show", json={"model": "terse"}).json()
    assert raw["system"] == "Answer in one word."
    answer = client.chat(model="terse", messages=[{"role": "user", "content": "Hi"}], options={"seed": 1})
    assert answer.eval_count is not None and answer.eval_count <= 4
    refused = httpx.post(server + "/api/create", json={"model": "x", "from": MODEL, "quantize": "q4_K_M"})
    assert refused.status_code == 400 and "quantize" in refused.json()["error"]
    builtin = httpx.post(server + "/api/create", json={"model": MODEL, "from": "terse", "system": "x"})
    assert builtin.status_code == 400, builtin.text  # the built-in name cannot be shadowed
    bad = httpx.post(server + "/api/create", json={"model": "y", "from": MODEL, "parameters": {"top_k": -5}})
    assert bad.status_code == 400 and "top_k" in bad.json()["error"]
    assert httpx.post(server + "/api/show", json={"model": "y"}).status_code == 404  # nothing half-made


def test_metrics_and_body_cap(hub_and_server: tuple[str, str]) -> None:
    _, server = hub_and_server
    httpx.post(
        server + "/api/generate",
        json={"model": MODEL, "prompt": "Hi", "options": {"num_predict": 2}},
        timeout=60,
    )
    text = httpx.get(server + "/metrics").text
    assert "candor_requests_total" in text and "candor_completion_tokens_total" in text
    assert "candor_models_loaded" in text
    huge = httpx.post(
        server + "/api/generate",
        content=b"x" * (33 << 20),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert huge.status_code == 413
    assert httpx.get(server + "/").status_code == 200
