"""Where the CLI finds a server and `candor serve` listens: one reading of OLLAMA_HOST's forms for both."""

from __future__ import annotations

import pytest

from candor import InvalidParameter
from candor.cli.serve import bind_address
from candor.client import server_url
from candor.config import parse_address


@pytest.mark.parametrize(
    "raw, url, bound",
    [
        ("", "http://127.0.0.1:11434", ("127.0.0.1", 11434)),
        ("0.0.0.0", "http://0.0.0.0:11434", ("0.0.0.0", 11434)),
        ("localhost:8080", "http://localhost:8080", ("localhost", 8080)),
        ("http://10.0.0.5:1234/", "http://10.0.0.5:1234", ("10.0.0.5", 1234)),
        ("https://example.org", "https://example.org:11434", ("example.org", 11434)),
        ("[::1]:9000", "http://[::1]:9000", ("::1", 9000)),
        ("::1", "http://[::1]:11434", ("::1", 11434)),
    ],
)
def test_host_forms_read_alike_for_clients_and_serve(
    raw: str, url: str, bound: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CANDOR_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert server_url(raw or None) == url
    assert bind_address(raw or None, None) == bound
    assert bind_address(raw or None, 7777) == (bound[0], 7777)  # --port wins


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANDOR_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.1:1")
    assert server_url() == "http://10.0.0.1:1"
    monkeypatch.setenv("CANDOR_HOST", "10.0.0.2:2")
    assert server_url() == "http://10.0.0.2:2"
    assert server_url("10.0.0.3:3") == "http://10.0.0.3:3"


@pytest.mark.parametrize("raw", ["host:port", "host:0", "host:70000", "ftp://host"])
def test_a_bad_address_says_how_to_write_one(raw: str) -> None:
    with pytest.raises(InvalidParameter, match=r"HOST\[:PORT\], e.g. 127.0.0.1:11434"):
        parse_address(raw)
