"""Safe defaults: refuse foreign Host headers (DNS rebinding) and Origins (cross-site pages), require the API
key when one is set, cap request bodies."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import socket
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from candor.server.errors import ANTHROPIC_PATHS, OPENAI_TYPES, anthropic_error

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
OPEN_PATHS = frozenset({"/", "/health"})  # answered without the API key, as Ollama's probe expects
OPEN_PAGE = "/ui"  # the chat page and its files hold no secret; the page's own API calls send the key


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


def _open_page(path: str) -> bool:
    return path == OPEN_PAGE or path.startswith(OPEN_PAGE + "/")


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
        allowed_origins: tuple[str, ...] = (),
        max_body_bytes: int = 32 << 20,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.loopback_only = loopback_only
        self.api_key = api_key.encode() if api_key else None

    def _host_ok(self, header: str) -> bool:
        name = _host_name(header)
        if not name:
            return False
        return _is_loopback(name) or name in self.allowed_hosts or "*" in self.allowed_hosts

    def _origin_ok(self, origin: str, host: str) -> bool:
        """A browser page may call only from this server itself, a loopback page (as Ollama allows), or
        an origin given with --cors-origins; requests without an Origin are not a browser's."""
        if not origin:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return True
        try:
            parts = urlsplit(origin)
            name = parts.hostname or ""
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not name:
            return False
        return _is_loopback(name) or parts.netloc == host.strip().lower()

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
        if not self._origin_ok(headers.get("origin", ""), headers.get("host", "")):
            await _refuse(
                scope,
                send,
                403,
                "requests from this Origin are not allowed; add it with --cors-origins (or "
                "CANDOR_CORS_ORIGINS) if you trust it",
            )
            return
        # A browser's CORS preflight never carries the key; it runs nothing, and the request it clears will.
        preflight = scope.get("method") == "OPTIONS" and "access-control-request-method" in headers
        if self.api_key is not None and path not in OPEN_PATHS and not _open_page(path) and not preflight:
            given = headers.get("authorization", "")
            token = given[7:].encode() if given.lower().startswith("bearer ") else b""
            token = token or headers.get("x-api-key", "").encode()  # Anthropic's clients send the key so
            if not hmac.compare_digest(token, self.api_key):
                await _refuse(
                    scope,
                    send,
                    401,
                    "missing or wrong API key; send 'Authorization: Bearer KEY' (or 'x-api-key: KEY')",
                )
                return
        length = headers.get("content-length", "")
        too_large = f"the request body is larger than {self.max_body_bytes} bytes"
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _refuse(scope, send, 413, too_large)
            return
        if not length and "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_capped(receive)
            if body is None:
                await _refuse(scope, send, 413, too_large)
                return
            receive = _replay(body, receive)
        await self.app(scope, self._capped(receive), send)

    async def _read_capped(self, receive: Receive) -> bytes | None:
        """A chunked body (its size unknown ahead), read up to the cap: None past it."""
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left; the app will see the same
            part = message.get("body", b"")
            seen += len(part)
            if seen > self.max_body_bytes:
                return None
            parts.append(part)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

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


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the app a body already read, then the connection's later messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyTooLarge(Exception):
    """A chunked body went past the cap."""


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    body: dict[str, object]
    if str(scope.get("path", "")).startswith(ANTHROPIC_PATHS):
        status, body = anthropic_error(status, message)
    elif str(scope.get("path", "")).startswith("/v1/"):
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
