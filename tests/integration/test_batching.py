"""Continuous batching on the real default model: determinism, and agreement with solo decoding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from near_tie import NEAR_TIE, check_drift, ranked

from candor import SamplingParams
from candor.engine import ContextConfig, NativeContext, NativeModel
from candor.engine.batching import BatchEngine, EngineRequest
from candor.types import TokenLogprob

PROMPTS = [
    "The history of the printing press begins",
    "In a small village by the sea,",
    "The three laws of thermodynamics are",
    "My favourite recipe for bread is",
    "Once upon a time, a dragon",
    "The capital cities of Europe include",
    "To learn a new language, you should",
    "The weather today is",
]
GREEDY = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)


@pytest.fixture(scope="module")
def native(default_model_path: Path) -> Iterator[NativeModel]:
    model = NativeModel(default_model_path)
    yield model
    model.close()


def run_batch(
    model: NativeModel, prompts: list[list[int]], slots: int, params: SamplingParams = GREEDY
) -> dict[int, list[tuple[int, TokenLogprob]]]:
    """Each request's tokens with their log-probabilities (their own only, unless `params` asks for more)."""
    eng = BatchEngine(
        model, ContextConfig(n_ctx=2048 * slots, n_threads=2, n_seq_max=slots), max_request_tokens=2048
    )
    params = params.with_overrides(logprobs=params.logprobs or 0)
    try:
        for i, prompt in enumerate(prompts):
            assert eng.submit(EngineRequest(i, tuple(prompt), params)) is None
        out: dict[int, list[tuple[int, TokenLogprob]]] = {i: [] for i in range(len(prompts))}
        while eng.busy:
            for event in eng.step():
                assert event.error is None
                if event.chunk is not None:
                    chunk = event.chunk
                    out[event.request_id].extend(zip(chunk.tokens, chunk.logprobs, strict=True))
        return out
    finally:
        eng.close()


def solo_along(model: NativeModel, prompt: list[int], path: list[int]) -> list[np.ndarray]:
    """Decode one sequence alone along `path` (another computation's tokens); each step's logits row."""
    ctx = NativeContext(model, ContextConfig(n_ctx=2048, n_threads=2))
    rows: list[np.ndarray] = []
    try:
        batch = ctx.batch
        batch.clear()
        for pos, token in enumerate(prompt):
            batch.add(token, pos, 0, pos == len(prompt) - 1)
        for step, token in enumerate(path):
            assert ctx.decode() == 0
            rows.append(np.ctypeslib.as_array(ctx.logits(-1), shape=(model.n_vocab,)).copy())
            batch.clear()
            batch.add(token, len(prompt) + step, 0, True)
        return rows
    finally:
        ctx.close()


def test_eight_concurrent_greedy_requests_repeat_exactly(native: NativeModel) -> None:
    prompts = [native.tokenize(p, add_special=True, parse_special=False) for p in PROMPTS]
    first = run_batch(native, prompts, slots=8)
    second = run_batch(native, prompts, slots=8)
    assert first == second  # the same batch shapes: the same arithmetic, to the last bit of each logprob
    assert all(len(tokens) == 48 for tokens in first.values())


def test_batched_logits_match_solo_up_to_a_near_tie(native: NativeModel) -> None:
    # Solo decoding follows each batched answer's own tokens, so every step of all eight is compared.
    prompts = [native.tokenize(p, add_special=True, parse_special=False) for p in PROMPTS]
    batched = run_batch(native, prompts, slots=8, params=GREEDY.with_overrides(logprobs=20))
    swaps = 0
    for i, prompt in enumerate(prompts):
        path = [token for token, _ in batched[i]]
        for step, ((token, entry), row) in enumerate(
            zip(batched[i], solo_along(native, prompt, path), strict=True)
        ):
            solo = ranked((native.piece(int(t)), float(row[t])) for t in np.argsort(row)[-20:])
            gap = float(row.max() - row[token])
            assert gap < NEAR_TIE, f"request {i}, step {step}: alone, the best token led by {gap:.3f}"
            check_drift(step, entry.piece, ranked(entry.top), solo)
            swaps += gap > 0
    # A swap needs a near-tie: about 3 steps in 100 on the native and AVX2 builds, not every tenth.
    assert swaps < len(PROMPTS) * 48 // 10
