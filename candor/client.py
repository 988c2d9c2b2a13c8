"""Find and talk to a running `candor serve` (never mistaking an Ollama for one)."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from typing import Any

import httpx

from candor.config import read, server_address
from candor.errors import Busy, CandorError, InvalidParameter, ModelNotFound


def server_url(host: str | None = None) -> str:
    """Where a candor server is called: `host` (a --host flag), else CANDOR_HOST, else OLLAMA_HOST, else
    127.0.0.1:11434."""
    return server_address(host).url


def running_server(url: str | None = None, timeout: float = 0.5) -> str | None:
    """The URL of a running candor server, or None (an Ollama there does not count)."""
    base = url or server_url()
    try:
        answer = httpx.get(base + "/api/version", timeout=timeout, headers=_auth())
        return base if answer.status_code == 200 and "candor" in answer.json() else None
    except (httpx.HTTPError, ValueError):
        return None


def _auth() -> dict[str, str]:
    key = read("CANDOR_API_KEY")
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
        raise _error(answer.status_code, data)
    return data


_ERRORS: dict[int, type[CandorError]] = {400: InvalidParameter, 404: ModelNotFound, 503: Busy}


def _error(status: int, data: Any) -> CandorError:
    """The server's error body as the candor error its status stands for."""
    message = data.get("error") if isinstance(data, dict) else None
    if isinstance(message, dict):  # OpenAI's shape
        message = message.get("message")
    return _ERRORS.get(status, CandorError)(str(message or f"the server answered {status}"))


def stream(
    base: str,
    path: str,
    body: dict[str, Any],
    on_headers: Callable[[Mapping[str, str]], None] | None = None,
) -> Generator[dict[str, Any], None, None]:
    """POST a streaming Ollama request and yield its NDJSON lines; closing the iterator hangs up, which
    cancels the generation on the server. An error line becomes a CandorError."""
    try:
        with httpx.stream(
            "POST", base + path, json=body, headers=_auth(), timeout=httpx.Timeout(60, read=None)
        ) as answer:
            if answer.status_code >= 400:
                answer.read()
                try:
                    data = answer.json()
                except ValueError:
                    data = {}
                raise _error(answer.status_code, data)
            if on_headers is not None:
                on_headers(answer.headers)
            for line in answer.iter_lines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise CandorError(
                        f"the server at {base} sent a line that is not JSON: {line[:80]!r}"
                    ) from None
                if "error" in item:
                    raise CandorError(str(item["error"]))
                yield item
    except httpx.HTTPError as exc:
        raise CandorError(
            f"the candor server at {base} stopped answering ({exc}); is it still running?"
        ) from None
