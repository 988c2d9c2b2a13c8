"""Send browsers that open / to the chat page, while Ollama clients keep their plain-text answer."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

PAGE = "/ui"


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def prefers_html(accept: str) -> bool:
    """Say whether an Accept header names text/html and ranks it at least as high as anything else.

    Browsers send `text/html,...,*/*;q=0.8`; curl sends `*/*` and Ollama's clients `application/json`,
    so only browsers are redirected.
    """
    html = 0.0
    best_other = 0.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if not media:
            continue
        q = _quality(params)
        if media == "text/html":
            html = max(html, q)
        else:
            best_other = max(best_other, q)
    return html > 0 and html >= best_other


class BrowserRedirect:
    """ASGI middleware: a GET of / that prefers HTML is redirected to the chat page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == "/":
            accept = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"accept"), "")
            if prefers_html(accept):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [
                            (b"location", PAGE.encode()),
                            (b"vary", b"accept"),  # the same URL answers curl with text
                            (b"content-length", b"0"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)
