"""Reranking through the library on a tiny reranker GGUF (bert, a classification head, pooling type rank)
that real llama.cpp runs; its scores are checked against the same weights computed in numpy."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from gguf import GGUFValueType
from gguf_factory import write_tiny_llama
from gguf_reranker import reference_score, write_tiny_reranker

import candor
from candor import InvalidParameter

QUERY = "hello the world"
# The fixture scores the share of "world" in what it reads: 3 of 3, 1 of 2, 1 of 5, none.
DOCUMENTS = ("hello", "world world world", "hello world", "hello the world and on")
BEST_FIRST = [1, 2, 3, 0]
BOS, EOS, SEP = 1, 2, 2  # the fixture's specials, as XLM-RoBERTa's: <s>, </s>, </s>


@pytest.fixture(scope="module")
def reranker(tiny_reranker_path: Path) -> Iterator[candor.Model]:
    with candor.load(tiny_reranker_path, ctx=128, threads=1) as model:
        yield model


def test_the_documents_rank_in_the_fixtures_order_by_clear_margins(reranker: candor.Model) -> None:
    scores = reranker.rerank(QUERY, DOCUMENTS)
    assert sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i]) == BEST_FIRST
    ranked = sorted(scores, reverse=True)
    assert min(a - b for a, b in itertools.pairwise(ranked)) > 0.3
    assert reranker.rerank("and on", DOCUMENTS) != scores  # the query is read too


def test_each_score_is_the_head_over_llama_servers_pair(reranker: candor.Model) -> None:
    # Without a rerank template, llama-server's format_prompt_rerank: BOS query EOS SEP document EOS.
    query = reranker.tokenize(QUERY, add_special=False)
    for document, score in zip(DOCUMENTS, reranker.rerank(QUERY, DOCUMENTS), strict=True):
        tokens = [BOS, *query, EOS, SEP, *reranker.tokenize(document, add_special=False), EOS]
        assert score == pytest.approx(reference_score(tokens), abs=5e-3)  # llama.cpp's f16 attention


def test_a_rerank_template_in_the_gguf_formats_the_pair(tmp_path: Path) -> None:
    path = write_tiny_reranker(tmp_path / "templated.gguf", rerank_template="<s>{document}</s>")
    with candor.load(path, ctx=128, threads=1) as model:
        scores = model.rerank(QUERY, DOCUMENTS)
        assert model.rerank("and on", DOCUMENTS) == scores  # this template leaves the query out
        for document, score in zip(DOCUMENTS, scores, strict=True):
            tokens = model.tokenize(f"<s>{document}</s>", add_special=False, parse_special=True)
            assert score == pytest.approx(reference_score(tokens), abs=5e-3)


def test_a_classifier_head_without_a_declared_pooling_type_is_a_reranker(
    reranker: candor.Model, tmp_path: Path
) -> None:
    # bge-reranker-v2-m3 as llama.cpp's converter writes it: cls and cls.output, no pooling type
    path = write_tiny_reranker(tmp_path / "undeclared.gguf", declare_rank=False)
    with candor.load(path, ctx=128, threads=1) as model:
        assert model.card.pooling_type is None and model.card.is_reranker
        assert model.rerank(QUERY, DOCUMENTS) == reranker.rerank(QUERY, DOCUMENTS)


def test_a_model_that_is_no_reranker_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    declares_none = (
        r"tiny-llama\.gguf is not a reranker: its GGUF declares no pooling type and has no classification "
        r"head \(cls, cls\.output\); rerank needs a reranker model such as bge-reranker"
    )
    with candor.load(tiny_model_path, ctx=128, threads=1) as model, pytest.raises(InvalidParameter) as none:
        model.rerank(QUERY, DOCUMENTS)
    none.match(declares_none)
    mean = write_tiny_llama(
        tmp_path / "mean.gguf", extra_metadata={"llama.pooling_type": (1, GGUFValueType.UINT32)}
    )
    with candor.load(mean, ctx=128, threads=1) as model, pytest.raises(InvalidParameter) as declared:
        model.rerank(QUERY, DOCUMENTS)
    declared.match("declares pooling type mean and has no classification head")


def test_a_reranker_makes_no_embeddings(reranker: candor.Model) -> None:
    with pytest.raises(InvalidParameter, match=r"tiny-reranker\.gguf is a reranker"):
        reranker.embed("hello")
