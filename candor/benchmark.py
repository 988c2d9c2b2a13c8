"""Measurements shared by `candor bench` and benchmarks/: candor's speed and llama.cpp's own tools'."""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import llama_cpp

from candor.model import Model
from candor.scheduler import Scheduler
from candor.scheduler.process import runner_environment
from candor.types import SamplingParams


def find_llama_tools(explicit: str | None = None) -> Path | None:
    """The folder holding llama-bench built at llama-cpp-python's llama.cpp commit, if there is one."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit) / "llama-bench")
    if found := shutil.which("llama-bench"):
        candidates.append(Path(found))
    cache = os.environ.get("CANDOR_REF_DIR", str(Path.home() / ".cache" / "candor-ref"))
    pattern = f"{cache}/llama-cpp-python-{llama_cpp.__version__}/build/bin/llama-bench"
    candidates += [Path(p) for p in glob.glob(pattern)]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.parent
    return None


def held_in_ram(cmd: list[str], in_ram: bool) -> tuple[list[str], dict[str, str] | None]:
    """A llama.cpp tool's command and environment: as upstream runs by default (weights mapped from the
    file), or holding the weights as a candor runner does (read into memory, glibc asked for huge pages)."""
    if not in_ram:
        return cmd, None
    return [*cmd, "--load-mode", "none"], runner_environment()


def llama_bench(
    tools: Path, model: Path, threads: int, *, prompt: int, gen: int, in_ram: bool = False
) -> float:
    """One llama-bench measurement (it warms up first); tokens/s."""
    cmd = [
        str(tools / "llama-bench"),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-p",
        str(prompt),
        "-n",
        str(gen),
        "-r",
        "1",
        "-o",
        "json",
    ]
    cmd, env = held_in_ram(cmd, in_ram)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(json.loads(out)[0]["avg_ts"])


def llama_batched_bench(
    tools: Path, model: Path, threads: int, *, streams: int, prompt: int, gen: int, in_ram: bool = False
) -> float:
    """llama-batched-bench's generation tokens/s for `streams` sequences (it samples nothing)."""
    cmd = [
        str(tools / "llama-batched-bench"),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-c",
        str(streams * (prompt + gen) + 512),
        "-npp",
        str(prompt),
        "-ntg",
        str(gen),
        "-npl",
        str(streams),
        "-kvu",
        "--output-format",
        "jsonl",
    ]
    cmd, env = held_in_ram(cmd, in_ram)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    return float(json.loads(line)["speed_tg"])


def decode_rate(model: Model, n: int, seed: int) -> float:
    """Decode n tokens from a one-token prompt with the default sampler chain; tokens/s after the first."""
    prompt = model.tokenize("", add_special=True) or [1000]
    done = model.generate(prompt, stream=False, max_tokens=n, ignore_eos=True, seed=seed)
    return done.timings.decode_tokens_per_second(done.usage)


def prefill_rate(model: Model, n: int, rng: random.Random) -> float:
    """Evaluate an n-token prompt of random tokens (as llama-bench does); prompt tokens/s."""
    vocab = model.card.vocab_size or 32000
    prompt = [rng.randrange(1000, vocab - 1) for _ in range(n)]  # fresh tokens: no prefix to reuse
    done = model.generate(prompt, stream=False, max_tokens=1, ignore_eos=True)
    return done.timings.prompt_tokens_per_second(done.usage)


def concurrent_decode_rate(
    sched: Scheduler,
    model: str | None,
    *,
    streams: int,
    prompt: int,
    gen: int,
    rng: random.Random,
    vocab: int,
) -> tuple[float, float]:
    """Aggregate decode t/s of `streams` concurrent requests through the scheduler, and median TTFT (s)."""
    results: list[tuple[int, float, float]] = []
    lock = threading.Lock()
    prompts = [[rng.randrange(1000, vocab - 1) for _ in range(prompt)] for _ in range(streams)]

    def client(index: int) -> None:
        params = SamplingParams(max_tokens=gen, ignore_eos=True, seed=index)
        started = time.perf_counter()
        first = None
        last = None
        for chunk in sched.generate(model, prompts[index], params=params):
            if first is None:
                first = time.perf_counter() - started
            last = chunk
        assert last is not None and last.usage is not None and last.timings is not None
        with lock:
            results.append((last.usage.completion_tokens - 1, last.timings.decode_seconds, first or 0.0))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Same prompt length and max_tokens: every stream decodes over the same steps.
    window = statistics.mean(r[1] for r in results)
    return sum(r[0] for r in results) / window, statistics.median(r[2] for r in results)


def spread(values: list[float]) -> str:
    """median [min..max]."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"
