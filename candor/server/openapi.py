"""/openapi.json as candor answers: 400 (not FastAPI's 422) for a bad body, and each API's error shape."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

OLLAMA_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
OPENAI_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "integer", "null"]},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}
ERRORS = {
    "400": "a malformed body, a field out of range, or a path where a model name belongs",
    "401": "the API key is missing or wrong (when the server has one)",
    "403": "a Host or Origin that is not allowed",
    "404": "no such model",
    "413": "the body is larger than the server accepts",
    "503": "the model's queue is full; retry later",
}


def candor_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once, with candor's real error statuses on every operation."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["OllamaError"] = OLLAMA_ERROR
    schemas["OpenAIError"] = OPENAI_ERROR
    for path, operations in spec.get("paths", {}).items():
        shape = "OpenAIError" if path.startswith("/v1/") else "OllamaError"
        body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}}
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # validation errors are 400s here, as both APIs' clients expect
            for status, text in ERRORS.items():
                responses.setdefault(status, {"description": text, "content": body})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = spec
    return spec
