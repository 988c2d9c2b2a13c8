"""/openapi.json: served, valid OpenAPI 3, every Ollama and OpenAI route (and llama-server's rerank) with its
request body schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import start_server, stop_server
from openapi_spec_validator import validate

from candor.server.llamacpp.protocol import RerankRequest
from candor.server.ollama import protocol as ollama_protocol
from candor.server.ollama.store_routes import CreateRequest, PullRequest
from candor.server.openai import protocol as openai_protocol

# Every route each API has, and the pydantic model its body is (None: no body).
ROUTES = {
    ("get", "/"): None,
    ("head", "/"): None,
    ("get", "/api/version"): None,
    ("post", "/api/generate"): ollama_protocol.GenerateRequest,
    ("post", "/api/chat"): ollama_protocol.ChatRequest,
    ("post", "/api/embed"): ollama_protocol.EmbedRequest,
    ("post", "/api/embeddings"): ollama_protocol.EmbeddingsRequest,
    ("get", "/api/tags"): None,
    ("post", "/api/show"): ollama_protocol.ModelRequest,
    ("get", "/api/ps"): None,
    ("delete", "/api/delete"): ollama_protocol.ModelRequest,
    ("post", "/api/copy"): ollama_protocol.CopyRequest,
    ("post", "/api/pull"): PullRequest,
    ("post", "/api/create"): CreateRequest,
    ("get", "/v1/models"): None,
    ("post", "/v1/chat/completions"): openai_protocol.ChatCompletionRequest,
    ("post", "/v1/completions"): openai_protocol.CompletionRequest,
    ("post", "/v1/embeddings"): openai_protocol.EmbeddingRequest,
    ("post", "/rerank"): RerankRequest,
    ("post", "/reranking"): RerankRequest,
    ("post", "/v1/rerank"): RerankRequest,
    ("post", "/v1/reranking"): RerankRequest,
    ("post", "/api/rerank"): RerankRequest,
    ("get", "/health"): None,
    ("get", "/metrics"): None,
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc, url = start_server(tmp_path_factory.mktemp("serve-openapi"))
    try:
        answer = httpx.get(url + "/openapi.json", timeout=30)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
        assert httpx.get(url + "/health", timeout=10).json() == {"status": "ok"}
        yield answer.json()
    finally:
        stop_server(proc)


def test_it_is_valid_openapi_3(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    validate(spec)  # raises on any violation of the OpenAPI specification


def test_every_route_is_listed_with_its_request_body_schema(spec: dict[str, Any]) -> None:
    listed = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert set(ROUTES) <= listed, sorted(set(ROUTES) - listed)
    schemas = spec["components"]["schemas"]
    for (method, path), model in ROUTES.items():
        operation = spec["paths"][path][method]
        if model is None:
            assert "requestBody" not in operation, (method, path)
            continue
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        documented = schemas[ref.rsplit("/", 1)[1]]
        expected = model.model_json_schema()
        assert set(documented["properties"]) == set(expected["properties"]), (method, path)
        assert set(documented.get("required", [])) == set(expected.get("required", [])), (method, path)


def test_bounds_and_error_shapes_are_documented(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert any(b.get("maximum") == 20 for b in chat["top_logprobs"]["anyOf"])
    assert any(b.get("minimum") == 1 for b in chat["max_tokens"]["anyOf"])
    generate = spec["paths"]["/api/generate"]["post"]["responses"]
    assert "422" not in generate and generate["400"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("/OllamaError")
    openai_chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert openai_chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
