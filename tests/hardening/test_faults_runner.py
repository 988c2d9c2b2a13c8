"""Runner faults: SIGKILL of a runner process mid-decode with 8 requests in flight, on the real default model.

Every request on it gets a clear RunnerCrashed, the next request loads the model again and succeeds, and
nothing leaks: no slot stays taken, no process or zombie is left, no reader thread outlives its runner.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candor import FinishReason, SamplingParams
from candor.config import Settings
from candor.errors import RunnerCrashed
from candor.scheduler import Scheduler, SchedulerConfig

IN_FLIGHT = 8
ENDLESS = SamplingParams(max_tokens=100_000, ignore_eos=True, seed=1)
SHORT = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their state letter (Z: a zombie nobody reaped)."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # it ended while we looked
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid:
            found[int(entry)] = state
    return found


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("candor-reader", "candor-stderr"))]


class Consumer(threading.Thread):
    """Iterate one request's chunks; remember how many came and how it ended."""

    def __init__(self, handle_chunks: Iterator[object]) -> None:
        super().__init__(daemon=True)
        self.stream = handle_chunks
        self.chunks = 0
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            for _ in self.stream:
                self.chunks += 1
        except BaseException as exc:  # the error is what the test inspects
            self.error = exc
        self.ended_at = time.monotonic()


@pytest.mark.parametrize("slots", [8, 4], ids=["8-decoding", "4-decoding-4-queued"])
def test_sigkill_of_a_runner_mid_decode(default_model_path: Path, slots: int) -> None:
    me = os.getpid()
    before = children(me)
    threads_before = set(reader_threads())
    settings = dataclasses.replace(Settings.from_env(), ctx=512, threads=1)
    sched = Scheduler(settings, SchedulerConfig(parallel=slots, queue_max=8, keep_alive=60))
    try:
        model = str(default_model_path)
        consumers = [
            Consumer(sched.generate(model, f"Story number {i}: once upon a time", params=ENDLESS).chunks(60))
            for i in range(IN_FLIGHT)
        ]
        for c in consumers:
            c.start()
        [info] = sched.loaded()
        runner = info["pid"]
        assert info["active_requests"] == IN_FLIGHT
        deadline = time.monotonic() + 60
        while sum(c.chunks >= 2 for c in consumers) < min(slots, IN_FLIGHT):  # every slot is decoding
            assert time.monotonic() < deadline, "the requests did not start decoding"
            time.sleep(0.01)

        killed_at = time.monotonic()
        os.kill(runner, signal.SIGKILL)
        for c in consumers:
            c.join(30)
        assert not any(c.is_alive() for c in consumers), "a request hung after its runner died"
        for c in consumers:
            assert isinstance(c.error, RunnerCrashed), c.error
            message = str(c.error)
            assert "SIGKILL" in message and "reloads on the next request" in message, message
            assert c.ended_at - killed_at < 5
        if slots < IN_FLIGHT:
            assert sum(c.chunks == 0 for c in consumers) == IN_FLIGHT - slots  # the queued ones too

        assert sched.loaded() == []  # the dead runner's model is forgotten, its slots with it
        assert runner not in children(me), "the killed runner was not reaped"
        counters = sched.metrics.snapshot()
        assert counters["runner_crashes"] == 1 and counters["requests_failed"] == IN_FLIGHT

        failed_within = max(c.ended_at for c in consumers) - killed_at
        reload_started = time.monotonic()
        done = list(sched.generate(model, "The capital of France is", params=SHORT).chunks(120))
        print(
            f"{slots} slots: {IN_FLIGHT} requests failed within {failed_within:.3f} s of the kill; "
            f"the next one (with the reload) took {time.monotonic() - reload_started:.2f} s"
        )
        assert done[-1].finish_reason is FinishReason.LENGTH
        assert done[-1].usage is not None and done[-1].usage.completion_tokens == 8
        [info] = sched.loaded()
        assert info["active_requests"] == 0 and info["pid"] != runner
        assert sched.metrics.snapshot()["loads"] == 2

        now = children(me)
        assert set(now) - set(before) == {info["pid"]}, now  # exactly the new runner, and no zombie
        assert now[info["pid"]] != "Z"
        deadline = time.monotonic() + 5
        while len(set(reader_threads()) - threads_before) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Only the new runner's reader and stderr threads: the dead runner's ended with it.
        assert len(set(reader_threads()) - threads_before) == 2, reader_threads()
    finally:
        sched.close()
    assert set(children(me)) <= set(before)  # closing the scheduler left no process of its own
