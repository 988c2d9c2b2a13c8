"""Who gets in: the Host / Origin / API-key matrix against a real `candor serve` on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import start_server, stop_server

KEY = "s3cret-key"
GOOD_ORIGIN = "https://good.example"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with an API key, one CORS origin and one extra allowed host."""
    home: Path = tmp_path_factory.mktemp("guard-home")
    proc, url = start_server(
        home, "--api-key", KEY, "--cors-origins", GOOD_ORIGIN, "--allowed-hosts", "trusted.example"
    )
    yield url
    stop_server(proc)


def get(url: str, path: str = "/api/tags", **headers: str) -> httpx.Response:
    return httpx.get(url + path, headers=headers, timeout=30)


AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "",
        "x.local",
        "x.internal",
        "host.docker.internal",  # only when allowed with --allowed-hosts
        "127.0.0.1.evil.example",  # DNS rebinding dressed as loopback
        "localhost.evil.example",
        "192.168.1.10",
        "[::ffff:8.8.8.8]",
    ],
)
def test_foreign_hosts_are_refused_even_with_the_key(guarded: str, host: str) -> None:
    answer = get(guarded, host=host, **AUTH)
    assert answer.status_code == 403, (host, answer.text)
    assert "Host" in answer.json()["error"]


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:11434", "127.0.0.1", "127.0.0.1:80", "[::1]:11434", "trusted.example"]
)
def test_loopback_and_allowed_hosts_pass(guarded: str, host: str) -> None:
    assert get(guarded, host=host, **AUTH).status_code == 200


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "file://", "http://evil.example:11434", "chrome-extension://x"]
)
def test_evil_origins_are_refused_before_anything_runs(guarded: str, origin: str) -> None:
    assert get(guarded, origin=origin, **AUTH).status_code == 403
    copied = httpx.post(
        guarded + "/api/copy",
        json={"source": "gemma-3-270m:Q4_K_M", "destination": "stolen"},
        headers={"origin": origin, **AUTH},
        timeout=30,
    )
    assert copied.status_code == 403
    names = [m["name"] for m in get(guarded, **AUTH).json()["models"]]
    assert "stolen:latest" not in names
    preflight = httpx.options(
        guarded + "/api/chat",
        headers={"origin": origin, "access-control-request-method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    openai_shape = httpx.get(guarded + "/v1/models", headers={"origin": origin, **AUTH}, timeout=30)
    assert openai_shape.status_code == 403 and openai_shape.json()["error"]["message"]


def test_allowed_origins_pass_with_cors_headers(guarded: str) -> None:
    good = get(guarded, origin=GOOD_ORIGIN, **AUTH)
    assert good.status_code == 200 and good.headers["access-control-allow-origin"] == GOOD_ORIGIN
    preflight = httpx.options(
        guarded + "/api/chat",
        headers={
            "origin": GOOD_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == GOOD_ORIGIN
    port = guarded.rsplit(":", 1)[1]
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:3000"):  # the server's own page; a local one
        assert get(guarded, origin=origin, **AUTH).status_code == 200, origin


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Basic {KEY}",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        KEY,
    ],
)
def test_missing_and_wrong_keys_are_refused(guarded: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    for path in ("/api/tags", "/v1/models", "/api/version", "/openapi.json", "/metrics"):
        answer = get(guarded, path, **headers)
        assert answer.status_code == 401, (path, authorization)
    posted = httpx.post(
        guarded + "/api/generate", json={"model": "x", "prompt": "y"}, headers=headers, timeout=30
    )
    assert posted.status_code == 401


def test_the_right_key_passes_and_the_probes_stay_open(guarded: str) -> None:
    for path in ("/api/tags", "/v1/models", "/api/version", "/openapi.json", "/metrics"):
        assert get(guarded, path, **AUTH).status_code == 200, path
    assert get(guarded, "/api/tags", authorization=f"bearer {KEY}").status_code == 200
    for path in ("/", "/health"):
        assert get(guarded, path).status_code == 200, path
