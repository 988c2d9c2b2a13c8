"""Candor errors -> HTTP statuses, in the body shape each API's clients expect."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from candor import errors

STATUS: dict[type[errors.CandorError], int] = {
    errors.NotFound: 404,
    errors.InvalidParameter: 400,
    errors.ContextOverflow: 400,
    errors.TemplateError: 400,
    errors.InvalidModelFile: 422,
    errors.UnsupportedModel: 422,
    errors.Busy: 503,
    errors.RunnerCrashed: 500,
    errors.ModelLoadError: 500,
    errors.EngineError: 500,
}
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    422: "invalid_request_error",
    503: "server_busy",
    500: "server_error",
}


def status_of(exc: errors.CandorError) -> int:
    """The HTTP status for a candor error (the most specific class wins)."""
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    529: "overloaded_error",
    500: "api_error",
}
ANTHROPIC_PATHS = ("/v1/messages",)


def anthropic_error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """Anthropic's status and body: a full queue is 529 `overloaded_error`, which its SDK retries."""
    status = 529 if status == 503 else status
    return status, {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
    }


def error_response(request: Request, status: int, message: str, code: str | None = None) -> JSONResponse:
    """`{"error": "..."}` on Ollama's routes; `{"error": {"message", "type", "code"}}` on OpenAI's;
    `{"type": "error", "error": {"type", "message"}}` on Anthropic's."""
    if request.url.path.startswith(ANTHROPIC_PATHS):
        status, body = anthropic_error(status, message)
        return JSONResponse(body, status_code=status)
    if request.url.path.startswith("/v1/"):
        body = {"error": {"message": message, "type": OPENAI_TYPES.get(status, "server_error"), "code": code}}
        return JSONResponse(body, status_code=status)
    return JSONResponse({"error": message}, status_code=status)


async def candor_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Translate a CandorError raised by a route."""
    assert isinstance(exc, errors.CandorError)
    return error_response(request, status_of(exc), str(exc), type(exc).__name__)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A malformed or mistyped request body: 400 with the fields named."""
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in exc.errors()
    )
    return error_response(request, 400, f"invalid request: {details}", "invalid_request")


async def body_too_large_handler(request: Request, exc: Exception) -> JSONResponse:
    """A chunked request body went past the server's cap."""
    return error_response(request, 413, f"the request body is too large ({exc})", "body_too_large")


async def client_gone_handler(request: Request, exc: Exception) -> Response:
    """Nobody is left to read an answer: close with nginx's 499 (client closed request)."""
    return Response(status_code=499)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (an unreadable body, an unknown route, a wrong method) in each API's shape."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 400:  # not an error: nothing to reshape
        return Response(status_code=exc.status_code, headers=exc.headers)
    # FastAPI's only 400 of its own: a body it could not decode (invalid UTF-8, nesting past its limit).
    message = (
        "the request body is not valid JSON in UTF-8; send a JSON object" if exc.status_code == 400 else ""
    )
    message = message or str(exc.detail)
    response = error_response(request, exc.status_code, message, "http_error")
    response.headers.update(exc.headers or {})
    return response
