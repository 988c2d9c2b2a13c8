"""Continuous batching on the real default model: determinism, and agreement with solo decoding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from candor import SamplingParams
from candor.engine import ContextConfig, NativeContext, NativeModel
from candor.engine.batching import BatchEngine, EngineRequest

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
NEAR_TIE = 0.5  # logits this close may swap places between batched and single-sequence arithmetic


@pytest.fixture(scope="module")
def native(default_model_path: Path) -> Iterator[NativeModel]:
    model = NativeModel(default_model_path)
    yield model
    model.close()


def run_batch(model: NativeModel, prompts: list[list[int]], slots: int) -> dict[int, list[int]]:
    eng = BatchEngine(
        model, ContextConfig(n_ctx=2048 * slots, n_threads=2, n_seq_max=slots), max_request_tokens=2048
    )
    try:
        for i, prompt in enumerate(prompts):
            assert eng.submit(EngineRequest(i, tuple(prompt), GREEDY)) is None
        out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
        while eng.busy:
            for event in eng.step():
                assert event.error is None
                if event.chunk is not None:
                    out[event.request_id].extend(event.chunk.tokens)
        return out
    finally:
        eng.close()


def solo_with_margins(
    model: NativeModel, prompt: list[int], n: int
) -> tuple[list[int], list[tuple[int, float]]]:
    """Greedy-decode one sequence alone; at each step also note the runner-up token and its logit gap."""
    ctx = NativeContext(model, ContextConfig(n_ctx=2048, n_threads=2))
    tokens: list[int] = []
    margins: list[tuple[int, float]] = []
    try:
        batch = ctx.batch
        batch.clear()
        for pos, token in enumerate(prompt):
            batch.add(token, pos, 0, pos == len(prompt) - 1)
        for step in range(n):
            assert ctx.decode() == 0
            row = np.ctypeslib.as_array(ctx.logits(-1), shape=(model.n_vocab,))
            second, best = np.argpartition(row, -2)[-2:]
            if row[second] > row[best]:
                best, second = second, best
            tokens.append(int(best))
            margins.append((int(second), float(row[best] - row[second])))
            batch.clear()
            batch.add(int(best), len(prompt) + step, 0, True)
        return tokens, margins
    finally:
        ctx.close()


def test_eight_concurrent_greedy_requests_repeat_exactly(native: NativeModel) -> None:
    prompts = [native.tokenize(p, add_special=True, parse_special=False) for p in PROMPTS]
    first = run_batch(native, prompts, slots=8)
    second = run_batch(native, prompts, slots=8)
    assert first == second
    assert all(len(tokens) == 48 for tokens in first.values())


def test_batched_text_matches_solo_up_to_a_near_tie(native: NativeModel) -> None:
    prompts = [native.tokenize(p, add_special=True, parse_special=False) for p in PROMPTS]
    batched = run_batch(native, prompts, slots=8)
    identical = 0
    for i, prompt in enumerate(prompts):
        solo, margins = solo_with_margins(native, prompt, 48)
        if solo == batched[i]:
            identical += 1
            continue
        k = next(j for j, (a, b) in enumerate(zip(solo, batched[i], strict=True)) if a != b)
        runner_up, gap = margins[k]
        # Anything but a near-tie between the solo run's two best tokens would be a batching bug.
        assert batched[i][k] == runner_up, f"request {i}: batched token {batched[i][k]} is not the runner-up"
        assert gap < NEAR_TIE, f"request {i}: the solo run's best token led by {gap:.3f}"
    assert identical >= 4  # most prompts have no near-tie in 48 tokens
