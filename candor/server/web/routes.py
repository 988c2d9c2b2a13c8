"""GET /ui: the chat page, and /ui/FILE: its scripts and style, read from the package."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter()

ASSETS = {  # the only files served: a fixed list, so no request can name another file
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "chats.js": "text/javascript; charset=utf-8",
    "view.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere and talks only to this server; it may not be framed.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # revalidate, so an upgraded candor serves its new page at once
}


def _static(name: str) -> bytes:
    return resources.files("candor.server.web").joinpath("static").joinpath(name).read_bytes()


@router.api_route("/ui", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> Response:
    """The chat page."""
    return Response(_static("index.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.api_route("/ui/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def asset(name: str) -> Response:
    """One of the page's scripts or its style sheet."""
    if name not in ASSETS:
        raise HTTPException(404, f"no file {name!r} in the chat page; open /ui")
    return Response(_static(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)
