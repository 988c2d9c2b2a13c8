"""llama-server's /rerank, as RAG pipelines call it: a real `candor serve` on a tiny reranker, on every
path it answers, in Jina's shape and TEI's; a model that is no reranker, and bad bodies, are 400s."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gguf_reranker import write_tiny_reranker
from live_server import import_into, start_server, stop_server

PATHS = ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking", "/api/rerank")
QUERY = "hello the world"
DOCUMENTS = ["hello", "world world world", "hello world", "hello the world and on"]
BEST_FIRST = [1, 2, 3, 0]  # the tiny reranker scores the share of "world" in what it reads


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_reranker_path: Path, tiny_model_path: Path
) -> Iterator[str]:
    """A server whose store holds the tiny reranker, once more as bge-reranker's GGUFs are written (a
    classifier head, no pooling type), and the tiny llama (which is no reranker)."""
    home = tmp_path_factory.mktemp("rerank-home") / "candor"
    import_into(home, tiny_reranker_path, "reranker:tiny")
    undeclared = write_tiny_reranker(home.parent / "undeclared.gguf", declare_rank=False)
    import_into(home, undeclared, "reranker:undeclared")
    import_into(home, tiny_model_path, "llama:tiny")
    proc, url = start_server(home)
    yield url
    stop_server(proc)


def post(server: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server + path, json=body, timeout=120)


def test_every_path_ranks_best_first_in_llama_servers_shape(server: str) -> None:
    body = {"model": "reranker:tiny", "query": QUERY, "documents": DOCUMENTS}
    answers = [post(server, path, body) for path in PATHS]
    assert [a.status_code for a in answers] == [200] * len(PATHS)
    first = answers[0].json()
    assert all(a.json() == first for a in answers[1:])
    assert set(first) == {"model", "object", "usage", "results"}
    assert first["model"] == "reranker:tiny" and first["object"] == "list"
    results = first["results"]
    assert [r["index"] for r in results] == BEST_FIRST
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    scores = [r["relevance_score"] for r in results]
    assert min(a - b for a, b in itertools.pairwise(scores)) > 0.3

    # each pair is <s> query </s></s> document </s>: 4 specials beside the query's and document's tokens
    def count(text: str) -> int:
        tokens = post(server, "/tokenize", {"model": "reranker:tiny", "content": text}).json()["tokens"]
        return len(tokens)

    expected = sum(4 + count(QUERY) + count(d) for d in DOCUMENTS)
    assert first["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


def test_a_reranker_that_declares_no_pooling_type_ranks_alike(server: str) -> None:
    body = {"query": QUERY, "documents": DOCUMENTS}
    declared = post(server, "/v1/rerank", {**body, "model": "reranker:tiny"}).json()["results"]
    undeclared = post(server, "/v1/rerank", {**body, "model": "reranker:undeclared"}).json()["results"]
    assert undeclared == declared


def test_top_n_keeps_the_best(server: str) -> None:
    body = {"model": "reranker:tiny", "query": QUERY, "documents": DOCUMENTS}
    top = post(server, "/v1/rerank", {**body, "top_n": 2}).json()["results"]
    assert [r["index"] for r in top] == BEST_FIRST[:2]
    assert post(server, "/v1/rerank", {**body, "top_n": 10}).json()["results"][-1]["index"] == BEST_FIRST[-1]
    assert post(server, "/v1/rerank", {**body, "top_n": 0}).json()["results"] == []


def test_texts_get_teis_bare_list(server: str) -> None:
    body = {"model": "reranker:tiny", "query": QUERY, "texts": DOCUMENTS, "return_text": True}
    answer = post(server, "/rerank", body).json()
    assert [r["index"] for r in answer] == BEST_FIRST
    assert all(set(r) == {"index", "score", "text"} and r["text"] == DOCUMENTS[r["index"]] for r in answer)
    without = post(server, "/rerank", {**body, "return_text": False}).json()
    assert all(set(r) == {"index", "score"} for r in without)


def test_a_model_that_is_no_reranker_is_a_400_naming_why(server: str) -> None:
    body = {"model": "llama:tiny", "query": QUERY, "documents": DOCUMENTS}
    refused = post(server, "/v1/rerank", body)
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert message.startswith(
        "llama:tiny is not a reranker: its GGUF declares no pooling type and has no classification head"
    )
    assert "bge-reranker" in message
    ollama = post(server, "/api/rerank", body)
    assert ollama.status_code == 400 and "is not a reranker" in ollama.json()["error"]
    embed = post(server, "/api/embed", {"model": "reranker:tiny", "input": "hello"})
    assert embed.status_code == 400 and "reranker:tiny is a reranker" in embed.json()["error"]


@pytest.mark.parametrize(
    "body, says",
    [
        ({"query": QUERY, "documents": []}, '"documents" must be a non-empty string array'),
        ({"query": QUERY}, '"documents" must be a non-empty string array'),
        ({"documents": DOCUMENTS}, "query: Field required"),
        ({"query": 3, "documents": DOCUMENTS}, "query"),
        ({"query": QUERY, "documents": ["a", 2]}, "documents"),
        ({"query": QUERY, "documents": "hello"}, "documents"),
        ({"query": QUERY, "documents": DOCUMENTS, "top_n": -1}, "top_n"),
        ({"query": QUERY, "documents": ["world " * 500]}, "shorten it"),
    ],
)
def test_bad_bodies_are_400s(server: str, body: dict[str, object], says: str) -> None:
    refused = post(server, "/rerank", {"model": "reranker:tiny", **body})
    assert refused.status_code == 400 and says in refused.json()["error"], refused.text


def test_the_paths_are_in_the_openapi_document(server: str) -> None:
    paths = httpx.get(server + "/openapi.json", timeout=30).json()["paths"]
    for path in PATHS:
        assert "requestBody" in paths[path]["post"], path
