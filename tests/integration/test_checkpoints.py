"""Context checkpoints on the real default model (Gemma 3: a 512-token window in 5 of 6 layers): with the
small sliding-window cache, a prefix the window has moved past is reused through a checkpoint, and the
answer is the one a fresh read gives."""

from __future__ import annotations

import ctypes
import random
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from near_tie import Greedy, assert_same_up_to_a_near_tie

from candor import SamplingParams
from candor.engine import ContextConfig, NativeContext, NativeModel, SequenceRunner
from candor.engine.batching import BatchEngine, EngineRequest
from candor.engine.checkpoints import CHECKPOINTS_PER_SEQUENCE

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=20)
ONE = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
# A 256-token batch keeps the sliding-window cache at 768 cells per sequence (512 + 256): 800 tokens
# are enough to push the window of a 300-token prefix out of it.
BATCH = 256
FIRST, EXTRA = 300, 500


@pytest.fixture(scope="module")
def native(default_model_path: Path) -> Iterator[NativeModel]:
    model = NativeModel(default_model_path)
    yield model
    model.close()


def prose(seed: int, words: int) -> str:
    """Deterministic sentence-shaped English (a different seed, different text)."""
    rng = random.Random(seed)
    nouns = ("river", "garden", "letter", "engine", "window", "market", "teacher", "village", "bridge")
    verbs = ("follows", "carries", "finds", "opens", "watches", "builds", "paints", "answers", "keeps")
    adjectives = ("quiet", "old", "bright", "narrow", "distant", "careful", "green", "heavy", "early")
    out = []
    while len(out) < words:
        out += f"The {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} the".split()
        out.append(f"{rng.choice(nouns)}{rng.choice(['.', ',', ' again.', ' at dawn.'])}")
    return " ".join(out)


@pytest.fixture(scope="module")
def turns(native: NativeModel) -> tuple[list[int], list[int], list[int]]:
    """A first prompt, a long continuation of it, and a short different one."""
    first = native.tokenize(prose(1, 400), add_special=True, parse_special=False)[:FIRST]
    extra = native.tokenize(" " + prose(2, 700), add_special=False, parse_special=False)[:EXTRA]
    other = native.tokenize(" Meanwhile, in another town,", add_special=False, parse_special=False)
    assert extra[0] != other[0]
    return first, extra, other


def engine(model: NativeModel, *, checkpoints: int = CHECKPOINTS_PER_SEQUENCE) -> BatchEngine:
    # As the runner builds it: one KV stream per slot, one logits row per slot
    config = ContextConfig(
        n_ctx=2048,
        n_batch=BATCH,
        n_threads=1,
        n_seq_max=1,
        n_outputs_max=1,
        kv_unified=False,
        checkpoints=checkpoints,
    )
    return BatchEngine(model, config, max_request_tokens=2048)


def ask(
    eng: BatchEngine, request_id: int, prompt: Sequence[int], params: SamplingParams = GREEDY
) -> tuple[int, Greedy]:
    """Run one request alone: the prompt tokens served from cache, and the greedy answer."""
    assert eng.submit(EngineRequest(request_id, tuple(prompt), params)) is None
    logprobs = []
    cached = -1
    while eng.busy:
        for event in eng.step():
            assert event.error is None and event.chunk is not None
            logprobs.extend(event.chunk.logprobs)
            if event.chunk.usage is not None:
                cached = event.chunk.usage.cached_tokens
    return cached, Greedy.of(logprobs)


def test_a_prefix_past_the_window_is_reused_through_a_checkpoint(
    native: NativeModel, turns: tuple[list[int], list[int], list[int]]
) -> None:
    first, extra, other = turns
    answers = {}
    for checkpoints in (CHECKPOINTS_PER_SEQUENCE, 0):
        eng = engine(native, checkpoints=checkpoints)
        try:
            # One token each: what the KV holds is then exactly the prompt.
            assert ask(eng, 1, first, ONE)[0] == 0
            # The window still holds the first prompt's end: reused whole, checkpoint or not.
            assert ask(eng, 2, first + extra, ONE)[0] == FIRST
            # 800 tokens later the sliding-window cache no longer holds the 300-token prefix's window.
            assert eng.context.earliest_position(0) > 0
            cached, answers[checkpoints] = ask(eng, 3, first + other)
            # Through the checkpoint taken when the first prompt was read; without one, all read again.
            assert cached == (FIRST if checkpoints else 0)
        finally:
            eng.close()
    # Reading the prefix again is a fresh read: the same answer, up to a near-tie of batch shapes.
    assert_same_up_to_a_near_tie(answers[CHECKPOINTS_PER_SEQUENCE], answers[0])


def test_the_single_sequence_runner_reuses_through_checkpoints_too(
    native: NativeModel, turns: tuple[list[int], list[int], list[int]]
) -> None:
    first, extra, other = turns
    context = NativeContext(native, ContextConfig(n_ctx=2048, n_batch=BATCH, n_threads=1, n_outputs_max=1))
    runner = SequenceRunner(context)

    def cached(prompt: list[int]) -> int:
        usage = [c.usage for c in runner.generate(prompt, ONE) if c.usage is not None]
        return usage[0].cached_tokens

    try:
        assert cached(first) == 0
        assert cached(first + extra) == FIRST
        assert cached(first + other) == FIRST  # the window had moved on: through the checkpoint
        assert cached(first + other + extra[:40]) == FIRST + len(other)  # the window holds it: direct
        assert context.checkpoints is not None
        ends = [c.end for c in context.checkpoints.of(0)]
        assert ends == [FIRST, FIRST + len(other), FIRST + len(other) + 40]
    finally:
        context.close()


def _corrupt(data: ctypes.Array[ctypes.c_uint8], position: int) -> ctypes.Array[ctypes.c_uint8]:
    """A copy of a checkpoint (llama_kv_cache::state_write's layout) with one cell's K and V overwritten."""
    raw = bytearray(bytes(data))
    offset = 8  # magic, sequence
    streams, count = struct.unpack_from("<II", raw, offset)
    offset += 8
    assert streams == 1
    positions = []
    for _ in range(count):
        pos, n_seq = struct.unpack_from("<iI", raw, offset)
        assert n_seq == 1  # and no cell extension (M-RoPE, PLE): 12 bytes a cell
        positions.append(pos)
        offset += 12
    cell = positions.index(position)
    v_trans, layers = struct.unpack_from("<II", raw, offset)
    offset += 8
    assert v_trans == 0
    for _ in range(2 * layers):  # every layer's K rows, then every layer's V rows
        _, row = struct.unpack_from("<iQ", raw, offset)
        offset += 12
        start = offset + cell * row
        raw[start : start + row] = np.full(row // 2, 3.0, dtype=np.float16).tobytes()
        offset += count * row
    assert offset == len(raw)
    return (ctypes.c_uint8 * len(raw)).from_buffer(raw)


def test_a_checkpoint_holds_just_the_window_that_resuming_one_before_its_end_needs(
    native: NativeModel, turns: tuple[list[int], list[int], list[int]]
) -> None:
    """Checkpoint.resumes_at against llama.cpp's own mask: of the cells a checkpoint ending at `end` holds
    (end - n_swa .. end - 1), the first is unused when reading resumes at `end` and used when it resumes
    at end - 1, so it serves both, and no earlier resume (which would need the cell before it)."""
    first, extra, other = turns
    tokens = (first + extra)[:600]
    context = NativeContext(native, ContextConfig(n_ctx=2048, n_batch=BATCH, n_threads=1, n_outputs_max=1))
    store = context.checkpoints
    assert store is not None
    n_swa = native.n_swa

    def read(prompt: Sequence[int], start: int) -> np.ndarray:
        batch = context.batch
        for begin in range(start, len(prompt), BATCH):
            batch.clear()
            for pos in range(begin, min(begin + BATCH, len(prompt))):
                batch.add(prompt[pos], pos, 0, pos == len(prompt) - 1)
            assert context.decode() == 0
        return np.ctypeslib.as_array(context.logits(-1), shape=(native.n_vocab,)).copy()

    try:
        read(tokens, 0)
        context.checkpoint(0)
        (checkpoint,) = store.of(0)
        assert (checkpoint.end, context.earliest_position(0)) == (600, 0)
        corrupted = _corrupt(checkpoint.data, checkpoint.end - n_swa)

        def resumed(data: ctypes.Array[ctypes.c_uint8], at: int) -> np.ndarray:
            context.restore_window(0, data, checkpoint.size)
            context.forget(0, at)
            assert context.earliest_position(0) == checkpoint.end - n_swa
            logits = read(tokens[:at] + other, at)
            context.forget(0, at)
            return logits

        at_end = resumed(checkpoint.data, 600)
        assert np.array_equal(resumed(corrupted, 600), at_end)  # position 88 is outside 600's window
        one_before = resumed(checkpoint.data, 599)
        assert not np.array_equal(resumed(corrupted, 599), one_before)  # and inside 599's
    finally:
        context.close()
