"""The engine and library API on a tiny llama GGUF that real llama.cpp runs in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

import candor
from candor import ContextOverflow, FinishReason, InvalidModelFile, ModelClosed, ModelNotFound, SamplingParams


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> candor.Model:
    with candor.load(tiny_model_path, ctx=128, threads=1) as model:
        yield model


def test_greedy_generation_is_deterministic_and_counted(tiny: candor.Model) -> None:
    first = tiny.generate("hello the", stream=False, temperature=0, max_tokens=12, ignore_eos=True)
    second = tiny.generate("hello the", stream=False, temperature=0, max_tokens=12, ignore_eos=True)
    assert first.text == second.text
    assert first.tokens == second.tokens
    assert first.usage.completion_tokens == 12 == len(first.tokens)
    assert first.usage.prompt_tokens == len(tiny.tokenize("hello the"))
    assert first.finish_reason is FinishReason.LENGTH


def test_streamed_chunks_add_up_to_the_completion(tiny: candor.Model) -> None:
    chunks = list(tiny.generate("hello", temperature=0, max_tokens=10, ignore_eos=True))
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason is FinishReason.LENGTH and last.usage is not None and last.timings is not None
    tokens = [t for c in chunks for t in c.tokens]
    assert len(tokens) == last.usage.completion_tokens == 10
    whole = tiny.generate("hello", stream=False, temperature=0, max_tokens=10, ignore_eos=True)
    assert "".join(c.text for c in chunks) == whole.text


def test_seeded_sampling_repeats_and_differs_across_seeds(tiny: candor.Model) -> None:
    runs = {
        seed: tiny.generate(
            "the",
            stream=False,
            temperature=1.5,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            max_tokens=16,
            ignore_eos=True,
            seed=seed,
        ).tokens
        for seed in (1, 1, 2)
    }
    again = tiny.generate(
        "the",
        stream=False,
        temperature=1.5,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        max_tokens=16,
        ignore_eos=True,
        seed=1,
    ).tokens
    assert runs[1] == again
    assert runs[1] != runs[2]


def test_tokens_as_prompt_and_round_trip(tiny: candor.Model) -> None:
    tokens = tiny.tokenize("hello the")
    assert tokens[0] == 1  # the tiny vocabulary's BOS
    assert tiny.detokenize(tokens).strip() == "hello the"
    by_text = tiny.generate("hello the", stream=False, temperature=0, max_tokens=5, ignore_eos=True)
    by_ids = tiny.generate(tokens, stream=False, temperature=0, max_tokens=5, ignore_eos=True)
    assert by_text.tokens == by_ids.tokens


def test_prompt_longer_than_the_context_is_a_clear_error(tiny: candor.Model) -> None:
    with pytest.raises(ContextOverflow, match="larger context"):
        tiny.generate("hello " * 400, stream=False)


def test_generation_stops_at_a_full_context_with_length(tiny_model_path: Path) -> None:
    with candor.load(tiny_model_path, ctx=32, threads=1) as model:
        done = model.generate("hello", stream=False, temperature=0, ignore_eos=True)
        n_ctx = model.n_ctx  # llama.cpp rounds the context up (to 256 here)
    assert done.finish_reason is FinishReason.LENGTH
    # Every position of the context is filled; the last sampled token needs no slot of its own.
    assert done.usage.prompt_tokens + done.usage.completion_tokens == n_ctx + 1


def test_invalid_sampling_values_fail_before_generation(tiny: candor.Model) -> None:
    with pytest.raises(candor.InvalidParameter, match="top_p"):
        tiny.generate("hi", top_p=3.0)
    with pytest.raises(candor.InvalidParameter, match="unknown"):
        tiny.generate("hi", bogus=1)


def test_a_second_stream_while_one_is_open_fails_fast(tiny: candor.Model) -> None:
    first = tiny.generate("hello", temperature=0, max_tokens=50, ignore_eos=True)
    next(first)
    with pytest.raises(candor.CandorError, match="already generating"):
        list(tiny.generate("hello", max_tokens=2))
    first.close()
    assert tiny.generate("hello", stream=False, max_tokens=2).usage.completion_tokens >= 1


def test_embeddings_are_unit_vectors_of_the_model_width(tiny: candor.Model) -> None:
    vectors = tiny.embed(["hello the", "a"])
    assert len(vectors) == 2 and all(len(v) == 64 for v in vectors)
    for vector in vectors:
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-4
    assert vectors[0] != vectors[1]
    assert tiny.embed("hello the") == [vectors[0]]


def test_closed_model_refuses_work(tiny_model_path: Path) -> None:
    model = candor.load(tiny_model_path, ctx=64, threads=1)
    model.close()
    model.close()  # idempotent
    with pytest.raises(ModelClosed):
        model.generate("hello", stream=False)


def test_missing_and_malformed_files_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no file"):
        candor.load(tmp_path / "absent.gguf")
    with pytest.raises(ModelNotFound, match="directory"):
        candor.load(tmp_path)
    with pytest.raises(ModelNotFound, match="default model"):
        candor.load("no-such-model")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(InvalidModelFile):
        candor.load(junk)


def test_unknown_architecture_is_a_load_error_with_llama_cpp_reason(tmp_path: Path) -> None:
    from gguf_factory import write_tiny_llama

    path = write_tiny_llama(tmp_path / "martian.gguf", arch="martian")
    with pytest.raises(candor.ModelLoadError, match="martian"):
        candor.load(path, ctx=64, threads=1)


def test_sampling_params_object_and_overrides_combine(tiny: candor.Model) -> None:
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    done = tiny.generate("hello", stream=False, params=params, max_tokens=4)
    assert done.usage.completion_tokens == 4


def test_text_with_a_lone_surrogate_is_a_clear_error(tiny_model_path: Path) -> None:
    from candor.engine import NativeModel
    from candor.errors import InvalidParameter

    model = NativeModel(tiny_model_path)
    try:
        with pytest.raises(InvalidParameter, match="surrogate"):
            model.tokenize("hi \ud800", add_special=True, parse_special=False)
    finally:
        model.close()


def test_the_first_generation_reports_the_load_and_keeps_its_logprobs(tiny_model_path: Path) -> None:
    with candor.load(tiny_model_path, ctx=128, threads=1) as model:
        first = list(model.generate("hello the", temperature=0, max_tokens=4, ignore_eos=True, logprobs=1))
        second = list(model.generate("hello the", temperature=0, max_tokens=4, ignore_eos=True, logprobs=1))
    for chunks in (first, second):
        assert [len(c.logprobs) for c in chunks] == [len(c.tokens) for c in chunks]
        assert sum(len(c.logprobs) for c in chunks) == 4
    assert first[-1].timings is not None and second[-1].timings is not None
    assert first[-1].timings.load_seconds == pytest.approx(model.load_seconds) and model.load_seconds > 0
    assert second[-1].timings.load_seconds == 0  # loaded once, reported once
