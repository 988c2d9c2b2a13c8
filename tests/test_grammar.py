"""Constrained decoding: schemas become grammars, unenforced keywords are refused, output obeys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import candor
from candor import InvalidParameter, SamplingParams
from candor.engine import ContextConfig, NativeModel
from candor.engine.batching import BatchEngine, EngineRequest
from candor.engine.grammar import GrammarGate
from candor.grammar_limits import check_schema, enforceable, schema_grammar
from candor.pipeline import JSON_OBJECT, ResponseFormat

BYTE_TOKENS = 3  # the tiny vocabulary: 3 specials, then one token per byte (gguf_factory.vocabulary)


def accepts(model: NativeModel, grammar: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler takes `text`, byte by byte, and then lets the reply end."""
    gate = GrammarGate(model.vocab, grammar, model.n_vocab)
    try:
        for byte in text.encode():
            if not gate.allows(BYTE_TOKENS + byte):
                return False
            gate.accept(BYTE_TOKENS + byte)
        return gate.allows(model.eos)
    finally:
        gate.close()


@pytest.fixture(scope="module")
def tiny_native(tiny_model_path: Path) -> Iterator[NativeModel]:
    model = NativeModel(tiny_model_path)
    yield model
    model.close()


def test_a_schema_grammar_takes_valid_instances_and_refuses_others(tiny_native: NativeModel) -> None:
    grammar = schema_grammar(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
            "required": ["a"],
            "title": "T",
            "description": "ignored safely",
        }
    )
    assert accepts(tiny_native, grammar, '{"a": 5}')
    assert accepts(tiny_native, grammar, '{"a": -12, "b": "y"}')
    assert not accepts(tiny_native, grammar, '{"a": "5"}')  # wrong type
    assert not accepts(tiny_native, grammar, '{"b": "x"}')  # a is required
    assert not accepts(tiny_native, grammar, '{"a": 5, "b": "z"}')  # not in the enum
    assert not accepts(tiny_native, grammar, '{"a": 5')  # unfinished


def test_the_json_object_format_takes_any_object_only(tiny_native: NativeModel) -> None:
    grammar = schema_grammar(JSON_OBJECT)
    assert accepts(tiny_native, grammar, '{"x": [1, 2.5, "s"], "y": {"z": null}}')
    assert not accepts(tiny_native, grammar, "[1, 2]")
    assert not accepts(tiny_native, grammar, "hello")


def test_unenforced_keywords_are_named_before_any_runner() -> None:
    with pytest.raises(InvalidParameter, match=r"minimum \(at /properties/a\)"):
        ResponseFormat({"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}})
    with pytest.raises(InvalidParameter, match="uniqueItems"):
        SamplingParams(json_schema={"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    with pytest.raises(InvalidParameter, match="object"):
        check_schema(["not", "a", "schema"])
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "array", "items": deep}
    with pytest.raises(InvalidParameter, match="nests deeper"):
        check_schema(deep)


def test_a_tool_schema_keeps_what_the_grammar_enforces_and_drops_what_would_break_it(
    tiny_native: NativeModel,
) -> None:
    tool = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 5, "format": "date-time", "minimum": 1},
            "command": {"type": "string", "maxLength": 200},  # 200 nested groups: too deep to run
        },
        "required": ["city"],
    }
    with pytest.raises(InvalidParameter, match="deeper than 64"):
        check_schema(enforceable({"type": "string", "maxLength": 200}) | {"maxLength": 200})
    loose = enforceable(tool)
    assert loose["properties"]["command"] == {"type": "string"}
    assert "minimum" not in loose["properties"]["city"]
    grammar = schema_grammar(loose)
    assert accepts(tiny_native, grammar, '{"city": "2026-12-08T10:00:00Z", "command": "' + "x" * 300 + '"}')
    assert not accepts(tiny_native, grammar, '{"city": "not a date"}')  # `format` still holds
    assert not accepts(tiny_native, grammar, '{"command": "ls"}')  # `required` still holds
    short = enforceable({"type": "object", "properties": {"city": {"type": "string", "maxLength": 5}}})
    assert short["properties"]["city"]["maxLength"] == 5  # a bound the grammar can take stays
    assert not accepts(tiny_native, schema_grammar(short), '{"city": "toolong"}')


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
