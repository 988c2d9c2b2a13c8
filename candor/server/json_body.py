"""Read every request body as JSON, whatever its Content-Type, as Ollama and llama-server do.

`curl URL -d '{...}'`, the form of every example in Ollama's documentation, sends
`application/x-www-form-urlencoded`; FastAPI would refuse such a body as "not an object".
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

JSON = b"application/json"


class JsonBodies:
    """ASGI middleware: a body-carrying request without a JSON Content-Type is treated as JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            headers = scope["headers"]
            given = next((v for k, v in headers if k == b"content-type"), b"")
            if not given.lower().startswith(JSON):
                kept = [(k, v) for k, v in headers if k != b"content-type"]
                scope = {**scope, "headers": [*kept, (b"content-type", JSON)]}
        await self.app(scope, receive, send)
