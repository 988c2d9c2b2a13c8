"""Constrained decoding: schemas become grammars, unenforced keywords are refused, output obeys."""

from __future__ import annotations

from pathlib import Path

import pytest

import candor
from candor import InvalidParameter, SamplingParams
from candor.engine import ContextConfig, NativeModel
from candor.engine.batching import BatchEngine, EngineRequest
from candor.engine.grammar import json_grammar, schema_grammar


def test_schema_becomes_a_grammar_and_unenforced_keywords_are_named() -> None:
    grammar = schema_grammar(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
            "title": "T",
            "description": "ignored safely",
        }
    )
    assert "root ::=" in grammar
    with pytest.raises(InvalidParameter, match=r"minimum \(at /properties/a\)"):
        schema_grammar({"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}})
    with pytest.raises(InvalidParameter, match="uniqueItems"):
        schema_grammar({"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    with pytest.raises(InvalidParameter, match="object"):
        schema_grammar(["not", "a", "schema"])
    assert "root" in json_grammar()


def test_generation_follows_the_grammar_on_the_tiny_model(tiny_model_path: Path) -> None:
    grammar = 'root ::= " hello the world" | " the a"'
    with candor.load(tiny_model_path, ctx=128, threads=1) as model:
        for seed in range(5):
            done = model.generate(
                "hello",
                stream=False,
                grammar=grammar,
                max_tokens=20,
                seed=seed,
                temperature=1.5,
                top_k=0,
                top_p=1.0,
                min_p=0.0,
            )
            assert done.text in (" hello the world", " the a"), done.text
            assert done.finish_reason is candor.FinishReason.STOP
        with pytest.raises(InvalidParameter, match="grammar"):
            model.generate("hello", stream=False, grammar="this is not gbnf")


def test_a_bad_grammar_fails_its_request_only_in_the_batch_engine(tiny_model_path: Path) -> None:
    native = NativeModel(tiny_model_path)
    eng = BatchEngine(native, ContextConfig(n_ctx=256, n_threads=1, n_seq_max=2), max_request_tokens=128)
    prompt = tuple(native.tokenize("hello", add_special=True, parse_special=False))
    eng.submit(EngineRequest(1, prompt, SamplingParams(grammar="this is not gbnf")))
    eng.submit(EngineRequest(2, prompt, SamplingParams(max_tokens=3, ignore_eos=True)))
    events = []
    while eng.busy:
        events.extend(eng.step())
    assert any(e.request_id == 1 and isinstance(e.error, InvalidParameter) for e in events)
    assert any(e.request_id == 2 and e.chunk is not None and e.chunk.finish_reason for e in events)
    eng.close()
    native.close()
