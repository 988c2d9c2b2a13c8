"""Safe defaults: refuse foreign Host headers (DNS rebinding) and require the API key when one is set."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import socket

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from candor.server.errors import OPENAI_TYPES

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
OPEN_PATHS = frozenset({"/", "/health"})  # answered without the API key, as Ollama's probe expects


def _host_name(header: str) -> str:
    host = header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def machine_names() -> set[str]:
    """This machine's own names and addresses (allowed when candor listens beyond loopback)."""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    with contextlib.suppress(OSError):
        names.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    return names


class Guard:
    """ASGI middleware: Host allow-list and Bearer key, before any route runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: set[str],
        loopback_only: bool,
        api_key: str | None,
        max_body_bytes: int = 32 << 20,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.loopback_only = loopback_only
        self.api_key = api_key.encode() if api_key else None

    def _host_ok(self, header: str) -> bool:
        name = _host_name(header)
        if not name:
            return False
        return _is_loopback(name) or name in self.allowed_hosts or "*" in self.allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if not self._host_ok(headers.get("host", "")):
            await _refuse(
                scope,
                send,
                403,
                "this Host is not allowed; add it with --allowed-hosts (or "
                "CANDOR_ALLOWED_HOSTS) if you trust it",
            )
            return
        if self.api_key is not None and path not in OPEN_PATHS:
            given = headers.get("authorization", "")
            token = given[7:].encode() if given.lower().startswith("bearer ") else b""
            if not hmac.compare_digest(token, self.api_key):
                await _refuse(scope, send, 401, "missing or wrong API key; send 'Authorization: Bearer KEY'")
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _refuse(scope, send, 413, f"the request body is larger than {self.max_body_bytes} bytes")
            return
        await self.app(scope, self._capped(receive), send)

    def _capped(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive (chunked uploads have no Content-Length)."""
        seen = 0
        limit = self.max_body_bytes

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return capped


class BodyTooLarge(Exception):
    """A chunked body went past the cap."""


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    body: dict[str, object]
    if str(scope.get("path", "")).startswith("/v1/"):
        body = {
            "error": {
                "message": message,
                "type": OPENAI_TYPES.get(status, "invalid_request_error"),
                "code": status,
            }
        }
    else:
        body = {"error": message}
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
