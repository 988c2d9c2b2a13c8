"""Find and talk to a running `candor serve` (never mistaking an Ollama for one)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from candor.errors import CandorError


def server_url() -> str:
    """Where a local candor server would listen: CANDOR_HOST, else OLLAMA_HOST, else 127.0.0.1:11434."""
    raw = os.environ.get("CANDOR_HOST") or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    if not raw.startswith(("http://", "https://")):
        raw = "http://" + raw
    if raw.count(":") == 1:  # no port
        raw += ":11434"
    return raw.rstrip("/")


def running_server(url: str | None = None, timeout: float = 0.5) -> str | None:
    """The URL of a running candor server, or None (an Ollama there does not count)."""
    base = url or server_url()
    try:
        answer = httpx.get(base + "/api/version", timeout=timeout, headers=_auth())
        return base if answer.status_code == 200 and "candor" in answer.json() else None
    except (httpx.HTTPError, ValueError):
        return None


def _auth() -> dict[str, str]:
    key = os.environ.get("CANDOR_API_KEY")
    return {"authorization": f"Bearer {key}"} if key else {}


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One JSON request to the server; its error message becomes a CandorError."""
    try:
        answer = httpx.request(method, base + path, json=body, timeout=60, headers=_auth())
    except httpx.HTTPError as exc:
        raise CandorError(
            f"the candor server at {base} did not answer ({exc}); is it still running?"
        ) from None
    data = answer.json() if answer.content else {}
    if answer.status_code >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        raise CandorError(str(message or f"the server answered {answer.status_code}"))
    return data
