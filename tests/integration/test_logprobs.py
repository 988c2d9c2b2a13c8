"""Log-probabilities of sampled tokens, from the real model, in-process and through a runner process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import candor
from candor.errors import InvalidParameter
from candor.scheduler import Scheduler, SchedulerConfig
from candor.types import Chunk, SamplingParams, TokenLogprob

PROMPT = "The capital of France is"


def check_greedy_logprobs(tokens: tuple[int, ...], logprobs: tuple[TokenLogprob, ...], top_n: int) -> None:
    assert len(logprobs) == len(tokens) > 0
    for entry in logprobs:
        assert entry.logprob <= 0.0
        assert len(entry.top) == top_n
        values = [lp for _, lp in entry.top]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-4
        # Greedy: the sampled token is the most likely one, with the same log-probability.
        assert entry.top[0][0] == entry.piece
        assert entry.top[0][1] == pytest.approx(entry.logprob, abs=1e-5)


@pytest.fixture(scope="module")
def scheduler(default_model_path: Path) -> Iterator[Scheduler]:
    sched = Scheduler(config=SchedulerConfig(parallel=2, keep_alive=60))
    try:
        yield sched
    finally:
        sched.close()


def test_library_greedy_logprobs_rank_the_sampled_token_first(gemma: candor.Model) -> None:
    done = gemma.generate(PROMPT, stream=False, temperature=0, max_tokens=12, logprobs=5)
    check_greedy_logprobs(done.tokens, done.logprobs, 5)
    assert b"".join(lp.piece for lp in done.logprobs).decode("utf-8", "replace").startswith(done.text[:3])


def test_no_logprobs_unless_asked(gemma: candor.Model) -> None:
    done = gemma.generate(PROMPT, stream=False, temperature=0, max_tokens=4)
    assert done.logprobs == ()
    zero = gemma.generate(PROMPT, stream=False, temperature=0, max_tokens=4, logprobs=0)
    assert len(zero.logprobs) == len(zero.tokens) and all(lp.top == () for lp in zero.logprobs)


def test_sampled_tokens_carry_their_own_logprob(gemma: candor.Model) -> None:
    done = gemma.generate(PROMPT, stream=False, temperature=1.5, seed=7, max_tokens=16, logprobs=3)
    assert len(done.logprobs) == len(done.tokens)
    for entry in done.logprobs:
        assert entry.logprob <= entry.top[0][1] + 1e-6  # never above the most likely token's


@pytest.mark.parametrize("bad", [-1, 21, True, 2.5])
def test_out_of_range_top_logprobs_are_refused(bad: object) -> None:
    with pytest.raises(InvalidParameter, match="logprobs"):
        SamplingParams(logprobs=bad)  # type: ignore[arg-type]


def test_logprobs_cross_the_runner_process(scheduler: Scheduler, default_model_path: Path) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=4)
    chunks: list[Chunk] = list(scheduler.generate(str(default_model_path), PROMPT, params=params))
    tokens = tuple(t for c in chunks for t in c.tokens)
    logprobs = tuple(lp for c in chunks for lp in c.logprobs)
    check_greedy_logprobs(tokens, logprobs, 4)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(logprobs)
