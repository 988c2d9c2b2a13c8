"""Scheduling on the tiny model: slot choice, prefix reuse, cancellation, admission, keep-alive, eviction,
crash recovery. Real llama.cpp and real runner processes; the tiny model makes them fast."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from gguf_factory import write_tiny_llama

from candor import Busy, FinishReason, Message, SamplingParams
from candor.engine import ContextConfig, NativeModel
from candor.engine.batching import BatchEngine, EngineEvent, EngineRequest
from candor.errors import ContextOverflow, InvalidParameter, RunnerCrashed, UnsupportedModel
from candor.pipeline import ReplyRequest
from candor.scheduler import LoadedModel, Scheduler, SchedulerConfig
from candor.scheduler import runner as runner_module
from candor.scheduler.pool import FIRST_REQUEST_GRACE
from candor.scheduler.protocol import Events, Generate, RunnerConfig, Shutdown

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def native(tiny_model_path: Path) -> Iterator[NativeModel]:
    model = NativeModel(tiny_model_path)
    yield model
    model.close()


def engine(model: NativeModel, *, slots: int = 4, n_ctx: int = 1024, per_request: int = 256) -> BatchEngine:
    return BatchEngine(
        model, ContextConfig(n_ctx=n_ctx, n_threads=1, n_seq_max=slots), max_request_tokens=per_request
    )


def drain(eng: BatchEngine, limit: int = 10_000) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    for _ in range(limit):
        if not eng.busy:
            return events
        events.extend(eng.step())
    raise AssertionError("the engine did not finish")


class FakeClock:
    """Keep-alive time that tests advance instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_unloads(scheduler: Scheduler, within: float = 3) -> None:
    """Reap until every model is unloaded (a request's end reaches the pool from its reader thread);
    fail if one is still loaded after `within` s."""
    deadline = time.monotonic() + within
    while scheduler.loaded() and time.monotonic() < deadline:
        scheduler.pool.reap()
        time.sleep(0.01)
    assert scheduler.loaded() == []


def finals(events: list[EngineEvent]) -> dict[int, EngineEvent]:
    return {e.request_id: e for e in events if e.final}


def test_requests_join_and_leave_between_steps(native: NativeModel) -> None:
    eng = engine(native, slots=2)
    words = native.tokenize("hello the world", add_special=True, parse_special=False)
    for i in range(3):  # three requests, two slots: the third waits for a free slot
        assert eng.submit(EngineRequest(i, tuple(words), GREEDY)) is None
    eng.step()
    assert eng.active_count == 2 and len(eng.waiting) == 1
    done = finals(drain(eng))
    assert set(done) == {0, 1, 2}
    assert all(
        e.chunk is not None and e.chunk.usage is not None and e.chunk.usage.completion_tokens == 8
        for e in done.values()
    )
    eng.close()


def test_batched_greedy_equals_solo_on_the_tiny_model(native: NativeModel) -> None:
    prompts = [native.tokenize(t, add_special=True, parse_special=False) for t in ("hello", "the world", "a")]
    eng = engine(native)
    for i, prompt in enumerate(prompts):
        eng.submit(EngineRequest(i, tuple(prompt), GREEDY))
    together = {
        i: [t for e in evs for t in (e.chunk.tokens if e.chunk else ())]
        for i, evs in _by_request(drain(eng)).items()
    }
    eng.close()
    alone = {}
    for i, prompt in enumerate(prompts):
        solo = engine(native, slots=1)
        solo.submit(EngineRequest(i, tuple(prompt), GREEDY))
        alone[i] = [t for e in drain(solo) for t in (e.chunk.tokens if e.chunk else ())]
        solo.close()
    assert together == alone


def _by_request(events: list[EngineEvent]) -> dict[int, list[EngineEvent]]:
    grouped: dict[int, list[EngineEvent]] = {}
    for event in events:
        grouped.setdefault(event.request_id, []).append(event)
    return grouped


def test_the_slot_with_the_longest_shared_prefix_is_chosen_and_reused(native: NativeModel) -> None:
    eng = engine(native, slots=3)
    base = native.tokenize("hello the world hello the", add_special=True, parse_special=False)
    other = native.tokenize("a a a", add_special=True, parse_special=False)
    eng.submit(EngineRequest(1, tuple(other), GREEDY))
    eng.submit(EngineRequest(2, tuple(base), GREEDY))
    drain(eng)
    slot_of_base = next(s for s in eng.slots if s.held[: len(base)] == base)
    longer = (*base, *native.tokenize(" world", add_special=False, parse_special=False))
    eng.submit(EngineRequest(3, longer, GREEDY))
    eng.step()  # admission: prefix reuse leaves only the new tokens to decode
    running = next(s for s in eng.slots if s.request is not None)
    assert running is slot_of_base
    assert running.fed == len(longer)  # one batch: the prompt minus the reused prefix fitted at once
    assert eng.context.batch.n_tokens == len(longer) - len(base)
    drain(eng)
    eng.close()


def test_a_new_conversation_leaves_another_ones_cache_alone(native: NativeModel) -> None:
    # Two agents taking turns: B shares only BOS and a word with A's slot, so it takes the empty slot
    # instead of overwriting A's cache for them; A's next turn then finds its whole cache again.
    eng = engine(native, slots=2)
    a = tuple(native.tokenize("hello the world " * 8, add_special=True, parse_special=False))
    b = tuple(native.tokenize("hello and a a a " * 8, add_special=True, parse_special=False))
    eng.submit(EngineRequest(1, a, GREEDY))
    drain(eng)
    eng.submit(EngineRequest(2, b, GREEDY))
    drain(eng)
    assert [len(s.held) for s in eng.slots] == [len(a) + 7, len(b) + 7]  # one each (the last token unread)
    a_next = (*a, *native.tokenize(" world", add_special=False, parse_special=False))
    eng.submit(EngineRequest(3, a_next, GREEDY))
    last = finals(drain(eng))[3].chunk
    assert last is not None and last.usage is not None and last.usage.cached_tokens >= len(a)
    # With no slot empty, a prompt sharing only its BOS takes the least recently used slot (B's): A's cache,
    # used last, stays.
    eng.submit(
        EngineRequest(4, tuple(native.tokenize("and " * 20, add_special=True, parse_special=False)), GREEDY)
    )
    drain(eng)
    assert eng.slots[0].held[: len(a_next)] == list(a_next)
    eng.close()


def test_a_prompt_longer_than_the_context_is_refused_with_how_to_raise_it(native: NativeModel) -> None:
    eng = engine(native, slots=1, n_ctx=64, per_request=64)
    long = tuple(native.tokenize("hello " * 100, add_special=True, parse_special=False))
    event = eng.submit(EngineRequest(1, long, GREEDY))
    assert event is not None and event.error is not None
    message = str(event.error)
    assert f"the prompt is {len(long)} tokens" in message and "loaded with 64 tokens per request" in message
    assert f"at most {native.n_ctx_train}" in message and "CANDOR_CTX" in message and "num_ctx" in message
    past = tuple(native.tokenize("hello " * (native.n_ctx_train + 10), add_special=True, parse_special=False))
    refused = engine(native, slots=1, n_ctx=native.n_ctx_train, per_request=native.n_ctx_train).submit(
        EngineRequest(2, past, GREEDY)
    )
    assert refused is not None and "it was trained for" in str(refused.error)
    eng.close()


def test_cancel_frees_the_slot_at_once(native: NativeModel) -> None:
    eng = engine(native, slots=1)
    prompt = tuple(native.tokenize("hello", add_special=True, parse_special=False))
    eng.submit(EngineRequest(1, prompt, SamplingParams(max_tokens=200, ignore_eos=True)))
    eng.submit(EngineRequest(2, prompt, GREEDY))
    eng.step()
    eng.step()
    assert eng.cancel(1)
    assert eng.active_count == 0
    assert not eng.cancel(99)
    done = finals(drain(eng))
    assert set(done) == {2}  # the waiting request got the slot; the cancelled one says nothing more
    eng.close()


def test_kv_exhaustion_with_all_slots_busy_finishes_with_length(native: NativeModel) -> None:
    # 4 slots share 256 KV cells, but each request may grow to 255 tokens: the pool runs out mid-step.
    eng = engine(native, slots=4, n_ctx=256, per_request=256)
    prompt = tuple(native.tokenize("hello the world", add_special=True, parse_special=False))
    for i in range(4):
        eng.submit(EngineRequest(i, prompt, SamplingParams(max_tokens=250, ignore_eos=True, seed=i)))
    done = finals(drain(eng))
    assert set(done) == {0, 1, 2, 3}
    reasons = [e.chunk.finish_reason for e in done.values() if e.chunk is not None]
    assert all(r is FinishReason.LENGTH for r in reasons)
    total = sum(e.chunk.usage.completion_tokens for e in done.values() if e.chunk and e.chunk.usage)
    assert total < 4 * 250  # someone was cut short by the full cache, not by max_tokens
    eng.close()


def test_a_prompt_too_long_for_a_request_is_refused(native: NativeModel) -> None:
    eng = engine(native, per_request=32)
    event = eng.submit(EngineRequest(1, tuple(range(5, 60)), GREEDY))
    assert event is not None and isinstance(event.error, ContextOverflow)
    eng.close()


# -- the scheduler with real runner processes --------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scheduler(tiny_model_path: Path, clock: FakeClock) -> Iterator[Scheduler]:
    config = SchedulerConfig(parallel=2, queue_max=1, max_loaded=2, keep_alive=60)
    sched = Scheduler(config=config, clock=clock)
    yield sched
    sched.close()


def test_generate_through_a_runner(scheduler: Scheduler, tiny_model_path: Path) -> None:
    chunks = list(scheduler.generate(str(tiny_model_path), "hello the", params=GREEDY))
    assert chunks[-1].finish_reason is FinishReason.LENGTH
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    [info] = scheduler.loaded()
    assert info["active_requests"] == 0 and info["context_length"] > 0
    counters = scheduler.metrics.snapshot()
    assert counters["requests"] == 1 and counters["completion_tokens"] == 8 and counters["loads"] == 1


def test_a_full_queue_is_refused_immediately(scheduler: Scheduler, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    slow = SamplingParams(max_tokens=100_000, ignore_eos=True)
    running = [scheduler.generate(model, "hello", params=slow) for _ in range(3)]  # 2 slots + 1 queued
    started = time.monotonic()
    with pytest.raises(Busy):
        scheduler.generate(model, "hello", params=slow)
    assert time.monotonic() - started < 0.5
    for handle in running:
        handle.cancel()
    assert scheduler.metrics.snapshot()["rejected_busy"] == 1
    # Cancelling freed everything: a new request runs to the end.
    assert list(scheduler.generate(model, "hello", params=GREEDY))[-1].finish_reason is FinishReason.LENGTH


def test_closing_a_stream_cancels_it(scheduler: Scheduler, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    stream = scheduler.generate(
        model, "hello", params=SamplingParams(max_tokens=100_000, ignore_eos=True)
    ).chunks()
    next(stream)
    stream.close()
    deadline = time.monotonic() + 2
    while scheduler.loaded()[0]["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.loaded()[0]["active_requests"] == 0
    assert scheduler.metrics.snapshot()["requests_cancelled"] == 1


def test_keep_alive_expiry_and_zero_unload(
    scheduler: Scheduler, tiny_model_path: Path, clock: FakeClock
) -> None:
    model = str(tiny_model_path)
    list(scheduler.generate(model, "hello", params=GREEDY, keep_alive=30))
    clock.advance(29)
    assert scheduler.pool.reap() == [] and scheduler.loaded()
    clock.advance(1)
    assert_unloads(scheduler)
    list(scheduler.generate(model, "hello", params=GREEDY, keep_alive=0))
    assert_unloads(scheduler)
    list(scheduler.generate(model, "hello", params=GREEDY, keep_alive=-1))
    [info] = scheduler.loaded()
    assert info["expires_at"] is None  # forever


def test_the_least_recently_used_idle_model_is_evicted(scheduler: Scheduler, tmp_path: Path) -> None:
    a, b, c = (str(write_tiny_llama(tmp_path / f"{n}.gguf", seed=i)) for i, n in enumerate("abc"))
    for model in (a, b, a):
        list(scheduler.generate(model, "hello", params=GREEDY))
    list(scheduler.generate(c, "hello", params=GREEDY))  # max_loaded=2: b is the LRU idle one
    loaded = {Path(m["name"]).name for m in scheduler.loaded()}
    assert loaded == {"a.gguf", "c.gguf"}
    assert scheduler.metrics.snapshot()["evictions"] == 1


def test_a_killed_runner_fails_its_requests_and_the_model_reloads(
    scheduler: Scheduler, tiny_model_path: Path
) -> None:
    model = str(tiny_model_path)
    handle = scheduler.generate(model, "hello", params=SamplingParams(max_tokens=100_000, ignore_eos=True))
    stream = handle.chunks(timeout=30)
    next(stream)
    [info] = scheduler.loaded()
    os.kill(info["pid"], signal.SIGKILL)
    with pytest.raises(RunnerCrashed, match="SIGKILL"):
        for _ in stream:
            pass
    assert list(scheduler.generate(model, "hello", params=GREEDY))[-1].finish_reason is FinishReason.LENGTH
    assert scheduler.metrics.snapshot()["runner_crashes"] == 1
    assert scheduler.metrics.snapshot()["loads"] == 2


def test_embeddings_and_tokens_through_the_runner(scheduler: Scheduler, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    cold = scheduler.embed(model, ["hello the", "a"])
    vectors = cold.vectors
    assert len(vectors) == 2 and all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    assert scheduler.tokenize(model, "hello")[0] == 1
    # Ollama's /api/embed counters: every input's tokens (BOS included), the wait for the model, the whole
    read = len(scheduler.tokenize(model, "hello the")) + len(scheduler.tokenize(model, "a"))
    assert cold.prompt_tokens == read == 5  # <s> hello ▁the, <s> a
    assert cold.total_seconds > cold.load_seconds > 0.1  # this call started the runner (a new process)
    warm = scheduler.embed(model, ["hello the", "a"])
    assert warm.vectors == vectors and warm.prompt_tokens == read
    assert warm.load_seconds < 0.05 and warm.total_seconds >= warm.load_seconds
    assert scheduler.embed(model, []).prompt_tokens == 0


def test_the_request_that_loads_a_model_reports_the_load(scheduler: Scheduler, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    params = GREEDY.with_overrides(logprobs=1)
    cold = list(scheduler.generate(model, "hello the", params=params))[-1].timings
    warm = list(scheduler.generate(model, "hello the", params=params))[-1]
    assert cold is not None and warm.timings is not None
    assert cold.load_seconds > 0.1 and warm.timings.load_seconds < 0.05  # Ollama's load_duration
    assert len(warm.logprobs) == len(warm.tokens)  # the final chunk keeps its other fields
    # A caller that loaded the model itself first (the server does, to plan the reply) adds that wait.
    handed = scheduler.chat(model, [{"role": "user", "content": "hi"}], params=GREEDY, load_seconds=2.5)
    timings = list(handed)[-1].timings
    assert timings is not None and 2.5 <= timings.load_seconds < 2.51


def test_two_names_for_one_file_share_one_runner(scheduler: Scheduler, tiny_model_path: Path) -> None:
    from dataclasses import replace

    from candor.store import library as manage

    first = manage.import_model(tiny_model_path, name="tiny:a")
    scheduler.pool.store.registry.put(
        replace(first, name="tiny:b", parameters={"temperature": 0}, owned_files=())
    )
    list(scheduler.generate("tiny:a", "hello", params=GREEDY))
    list(scheduler.generate("tiny:b", "hello", params=GREEDY))
    [info] = scheduler.loaded()
    assert info["names"] == ["tiny:a", "tiny:b"] and info["name"] == "tiny:a"
    # Each name keeps its own defaults even though the runner is shared.
    assert scheduler.defaults("tiny:b").temperature == 0
    assert scheduler.defaults("tiny:a").temperature == SamplingParams().temperature
    # Removing one name keeps the runner for the other; removing the last unloads the file.
    assert scheduler.unload_name("tiny:b")
    assert [m["names"] for m in scheduler.loaded()] == [["tiny:a"]]
    assert scheduler.unload_name("tiny:a")
    assert scheduler.loaded() == []


def test_keep_alive_zero_unloads_even_when_the_request_fails_early(
    scheduler: Scheduler, tiny_model_path: Path
) -> None:
    model = str(tiny_model_path)
    list(scheduler.generate(model, "hello", params=GREEDY))  # loaded, with the default keep-alive
    with pytest.raises(InvalidParameter, match="cannot think"):  # refused once the model is claimed
        scheduler.reply(ReplyRequest(model, (Message("user", "hello"),), think=True, keep_alive=0))
    assert_unloads(scheduler)


def test_a_model_without_a_kv_cache_is_refused_for_generation(native: NativeModel) -> None:
    assert native.architecture == "llama"
    native.check_generates()
    eng = engine(native)
    native.architecture = "bert"  # what an embedding model reports; llama.cpp would abort on its decode
    try:
        event = eng.submit(EngineRequest(1, (5, 6), GREEDY))
        assert event is not None and isinstance(event.error, UnsupportedModel)
        assert "embeddings" in str(event.error)
    finally:
        native.architecture = "llama"
        eng.close()


def test_text_the_runner_cannot_encode_fails_that_request_only(
    scheduler: Scheduler, tiny_model_path: Path
) -> None:
    model = str(tiny_model_path)
    with pytest.raises(InvalidParameter, match="surrogate"):
        list(scheduler.generate(model, "hi \ud800", params=GREEDY))
    assert list(scheduler.generate(model, "hello", params=GREEDY))[-1].finish_reason is FinishReason.LENGTH
    assert scheduler.metrics.snapshot()["runner_crashes"] == 0


def test_unloading_a_busy_model_waits_for_its_requests(scheduler: Scheduler, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    running = scheduler.generate(model, "hello", params=SamplingParams(max_tokens=300, ignore_eos=True))
    chunks = running.chunks()
    next(chunks)
    assert scheduler.unload(model)  # another client's keep_alive 0, or `candor stop`
    assert scheduler.loaded() and scheduler.loaded()[0]["active_requests"] == 1
    assert list(chunks)[-1].finish_reason is FinishReason.LENGTH  # the answer was not cut off
    assert_unloads(scheduler)


def test_keep_alive_on_a_loaded_idle_model_takes_effect(
    scheduler: Scheduler, tiny_model_path: Path, clock: FakeClock
) -> None:
    model = str(tiny_model_path)
    scheduler.load(model, keep_alive=0.5)
    list(scheduler.generate(model, "hello", params=GREEDY))
    scheduler.load(model, keep_alive=-1)  # Ollama's "keep it loaded"
    assert scheduler.loaded()[0]["expires_at"] is None
    clock.advance(365 * 24 * 3600)
    assert scheduler.pool.reap() == [] and scheduler.loaded()
    scheduler.load(model, keep_alive=0.2)
    assert scheduler.loaded()[0]["expires_at"] == clock.now + 0.2
    clock.advance(0.2)
    assert_unloads(scheduler)


def test_a_keep_alive_0_request_keeps_its_model_until_its_runner_has_it(
    scheduler: Scheduler, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # `keep_alive: 0` makes a freshly loaded model due at once; the reaper must not close it while the
    # request that loaded it is on its way to the runner (here held there for over two reaper rounds).
    admit = scheduler._admit
    reaped: list[list[str]] = []

    def slow_admit(loaded: LoadedModel) -> None:
        clock.advance(3600)
        reaped.append(scheduler.pool.reap())  # the reaper runs while the request is on its way
        admit(loaded)

    monkeypatch.setattr(scheduler, "_admit", slow_admit)
    chunks = list(scheduler.generate(str(tiny_model_path), "hello", params=GREEDY, keep_alive=0))
    assert chunks[-1].finish_reason is not None and reaped == [[]]
    assert_unloads(scheduler)  # and still unloaded once it has ended


def test_a_model_loaded_for_a_keep_alive_0_request_waits_for_that_request(
    scheduler: Scheduler, tiny_model_path: Path, clock: FakeClock
) -> None:
    # The server loads the model, resolves the request, then hands it over: the model must still be there.
    model = str(tiny_model_path)
    assert scheduler.defaults(model) == SamplingParams()  # looks up the name; loads nothing
    assert scheduler.loaded() == []
    scheduler.load(model, keep_alive=0)
    clock.advance(FIRST_REQUEST_GRACE - 1)
    assert scheduler.pool.reap() == []
    assert scheduler.loaded() and scheduler.metrics.snapshot()["loads"] == 1
    chunks = list(scheduler.generate(model, "hello", params=GREEDY, keep_alive=0))
    assert chunks[-1].finish_reason is not None and scheduler.metrics.snapshot()["loads"] == 1
    assert_unloads(scheduler)  # then unloaded as the request ends


def test_a_context_beyond_the_model_is_capped_not_reloaded(
    scheduler: Scheduler, tiny_model_path: Path
) -> None:
    model = str(tiny_model_path)
    first = scheduler.load(model, ctx=1 << 20)
    again = scheduler.load(model, ctx=1 << 20)
    assert again is first and scheduler.metrics.snapshot()["loads"] == 1


@contextlib.contextmanager
def runner_over_a_pipe(model_path: Path) -> Iterator[Connection]:
    """A real two-slot runner serving on a thread; yields the scheduler's end of its pipe."""
    ours, theirs = Pipe()
    config = RunnerConfig(path=str(model_path), ctx=256, parallel=2, threads=1, batch=64, gpu_layers=0)
    loop = runner_module.Runner(config, theirs)
    serving = threading.Thread(target=loop.serve)
    serving.start()
    try:
        yield ours
    finally:
        ours.send(Shutdown())
        serving.join(40)
        loop.engine.close()
        loop.model.close()


def test_requests_arriving_together_at_an_idle_runner_start_in_one_step(tiny_model_path: Path) -> None:
    # A real runner over a real pipe: the second request comes 1 ms after the first, far less than the
    # gather window, while a step of the tiny model takes well under that; both must be in the first step.
    with runner_over_a_pipe(tiny_model_path) as ours:
        params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
        ours.send(Generate(1, params, tokens=(1, 5, 6)))
        time.sleep(0.001)
        ours.send(Generate(2, params, tokens=(1, 7, 8)))
        first_seen: dict[int, int] = {}  # request id -> index of the message its first text came in
        finished: set[int] = set()
        received = 0
        while finished != {1, 2}:
            assert ours.poll(10), "the runner stopped answering"
            for message in ours.recv():
                assert isinstance(message, Events)
                for request_id, chunk, error in message.items:
                    assert error is None and chunk is not None
                    first_seen.setdefault(request_id, received)
                    if chunk.finish_reason is not None:
                        finished.add(request_id)
            received += 1
        assert first_seen[1] == first_seen[2] == 0


def test_is_ready_says_whether_load_would_return_at_once(scheduler: Scheduler, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    assert not scheduler.is_ready(model)  # nothing loaded yet: load() would start a runner
    assert not scheduler.is_ready(str(tiny_model_path.with_name("missing.gguf")))
    loaded = scheduler.load(model, ctx=128)
    assert scheduler.is_ready(model) and scheduler.is_ready(model, ctx=loaded.ctx)
    assert not scheduler.is_ready(model, ctx=loaded.ctx * 2)  # a larger context reloads
    scheduler.unload(model)
    assert not scheduler.is_ready(model)


def first_token_step(eng: BatchEngine, request_ids: set[int]) -> dict[int, int]:
    """Step until every request has its first token; which step (counted from 1) gave each one."""
    seen: dict[int, int] = {}
    for step in range(1, 20):
        eng.step()
        for slot in eng.slots:
            if slot.request is not None and slot.request.id in request_ids and slot.next_token is not None:
                seen.setdefault(slot.request.id, step)
        if set(seen) >= request_ids:
            return seen
    raise AssertionError("the prompts were never read")


def test_near_equal_prompts_into_an_idle_engine_all_get_their_first_token_in_one_pass(
    native: NativeModel,
) -> None:
    # One KV stream per slot: llama.cpp spends a pass over the weights on every run of equal token counts,
    # and first tokens computed in separate passes cost nearly a decode step each. So the longer prompts
    # read their extra tokens first, without outputs, and then all read the shortest length together.
    eng = engine(native, slots=3)
    for i, n in enumerate((10, 11, 13)):
        assert eng.submit(EngineRequest(i, tuple(range(5, 5 + n)), GREEDY)) is None
    eng.step()
    assert [s.planned for s in eng.slots] == [0, 1, 3]  # the extra tokens; the 10-token prompt waits
    assert all(s.next_token is None for s in eng.slots)  # no output in that pass
    eng.step()
    assert [s.planned for s in eng.slots] == [10, 10, 10]  # one run, and every prompt ends in it
    assert all(s.next_token is not None and s.fed == len(s.request.prompt) for s in eng.slots if s.request)
    drain(eng)
    for i, n in enumerate((10, 11, 60), start=3):  # beside a long prompt nobody waits, nothing is cut
        assert eng.submit(EngineRequest(i, tuple(range(100, 100 + n)), GREEDY)) is None
    eng.step()
    assert sorted(s.planned for s in eng.slots) == [10, 11, 60]
    drain(eng)


def test_prompts_read_beside_decoding_slots_take_even_chunks_and_leftovers_trickle(
    native: NativeModel,
) -> None:
    eng = engine(native, slots=5)
    for i in (0, 1):
        assert eng.submit(EngineRequest(i, tuple(range(50, 60)), GREEDY)) is None
    eng.step()  # requests 0 and 1 now decode
    for i, n in zip((2, 3, 4), (10, 11, 13), strict=True):
        assert eng.submit(EngineRequest(i, tuple(range(5, 5 + n)), GREEDY)) is None
    steps = first_token_step(eng, {2, 3, 4})
    # the 13-token prompt is cut to the median, 11; its last 2 tokens go one a step beside the decoding
    # slots; the shorter ones are read whole
    assert steps == {2: 1, 3: 1, 4: 3}
    long_prompt = tuple(range(5, 45))
    for i in (2, 3, 4):
        eng.cancel(i)
    assert eng.submit(EngineRequest(5, long_prompt, GREEDY)) is None
    assert first_token_step(eng, {5}) == {5: 1}  # a long prompt beside decoding slots is read whole
    drain(eng)


def test_the_load_time_warm_up_leaves_no_trace(native: NativeModel) -> None:
    # The runner decodes and samples one burst-shaped batch at load; requests must not see it.
    cold, warm = engine(native, slots=3), engine(native, slots=3)
    warm.warm_up(tokens_per_slot=5)
    assert not warm.busy and all(not s.held and s.sampler is None for s in warm.slots)
    assert all(warm.context.earliest_position(s.seq) == -1 for s in warm.slots)  # KV empty
    texts = []
    for eng in (cold, warm):
        for i in range(3):
            assert eng.submit(EngineRequest(i, tuple(range(7 + i, 20 + 2 * i)), GREEDY)) is None
        texts.append(sorted((e.request_id, e.chunk.text) for e in drain(eng) if e.chunk is not None))
        eng.close()
    assert texts[0] == texts[1] and any(text for _, text in texts[0])


def test_a_short_shared_prefix_is_read_again_beside_other_prompts_but_reused_alone(
    native: NativeModel,
) -> None:
    eng = engine(native, slots=3)
    assert eng.submit(EngineRequest(0, tuple(range(5, 25)), GREEDY)) is None
    drain(eng)  # one slot now holds tokens 5..24 and what was generated after them
    same_start = (5, 6, 7, 8, *range(100, 116))  # shares 4 tokens with it, 20 long like the others
    for i, prompt in enumerate((same_start, tuple(range(150, 170)), tuple(range(200, 220))), start=1):
        assert eng.submit(EngineRequest(i, prompt, GREEDY)) is None
    eng.step()  # read together: all three from the start, 20 tokens each, one run
    assert [s.planned for s in eng.slots] == [20, 20, 20] and all(s.fed == 20 for s in eng.slots)
    drain(eng)
    cached = next(s for s in eng.slots if s.held[:4] == [5, 6, 7, 8])
    assert eng.submit(EngineRequest(4, (5, 6, 7, 8, *range(250, 260)), GREEDY)) is None
    eng._admit()  # alone, the same 4 shared tokens are worth keeping
    assert cached.request is not None and cached.request.id == 4 and cached.fed == 4
    drain(eng)


def test_a_runner_whose_slots_all_have_requests_starts_without_waiting_for_more(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "GATHER_QUIET", 30.0)  # a gather that would wait half a minute
    monkeypatch.setattr(runner_module, "GATHER_MAX", 30.0)
    with runner_over_a_pipe(tiny_model_path) as ours:
        params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
        ours.send(Generate(1, params, tokens=(1, 5, 6)))
        ours.send(Generate(2, params, tokens=(1, 7, 8)))
        assert ours.poll(5), "the runner waited for a third request that had no slot to go to"


def test_usage_counts_the_prompt_tokens_the_prefix_cache_supplied(
    scheduler: Scheduler, tiny_model_path: Path
) -> None:
    model = str(tiny_model_path)
    history = "hello the world " * 8
    first = list(scheduler.generate(model, history, params=GREEDY))[-1].usage
    again = list(scheduler.generate(model, history + "the end", params=GREEDY))[-1].usage
    assert first is not None and again is not None
    assert first.cached_tokens == 0
    # the whole first prompt was kept (its answer's tokens differ from the new text, so they are not)
    assert first.prompt_tokens - 1 <= again.cached_tokens < again.prompt_tokens


def test_images_are_refused_before_any_model_loads(scheduler: Scheduler, tiny_model_path: Path) -> None:
    turn = Message("user", "what is this?", images=(b"\x89PNG\r\n\x1a\n",))
    with pytest.raises(InvalidParameter, match="vision is not supported yet"):
        scheduler.reply(ReplyRequest(str(tiny_model_path), (turn,)))
    assert scheduler.loaded() == []
