"""`candor bench`: candor's prefill and decode speed here, beside llama.cpp's own tools when present."""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

import candor
from candor.cli.llama_tools import find_llama_tools, llama_batched_bench, llama_bench, tools_build
from candor.config import Settings
from candor.diagnostics import candor_build
from candor.scheduler import Scheduler, SchedulerConfig
from candor.types import SamplingParams

if TYPE_CHECKING:
    from candor.model import Model

STREAMS = 8


def register(sub: Any) -> None:
    """Add the `bench` command."""
    parser = sub.add_parser(
        "bench",
        help="measure prefill and decode speed (and the ratio to llama.cpp's tools)",
        description=__doc__,
        epilog="example: candor bench --runs 3 --llama-tools ~/llama.cpp/build/bin",
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="a model name or .gguf path (default model)"
    )
    parser.add_argument("--runs", type=int, default=3, help="measurements of each figure (3)")
    parser.add_argument("--threads", type=int, help="CPU threads (CANDOR_THREADS)")
    parser.add_argument("--llama-tools", help="folder with llama-bench and llama-batched-bench")
    parser.set_defaults(handler=handle)


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


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def handle(args: argparse.Namespace) -> int:
    """Measure, alternating candor and llama.cpp, and print medians and ratios."""
    if args.runs < 1:
        raise candor.InvalidParameter("--runs must be at least 1")
    base = Settings.from_env()
    threads = args.threads or base.threads
    tools = find_llama_tools(args.llama_tools)
    rng = random.Random(0)
    rows: dict[str, list[float]] = {k: [] for k in ("pp", "tg", "agg", "llama_pp", "llama_tg", "llama_agg")}
    with candor.load(args.model, threads=threads) as model:
        path = model.path
        vocab = model.card.vocab_size or 32000
        # llama.cpp's tools hold the weights as candor does here: with or without extra buffer types
        extra = model.cpu_buffers.extra
        buffers = model.cpu_buffers.why
        decode_rate(model, 16, 0)  # warm-up
        for run in range(args.runs):
            rows["pp"].append(prefill_rate(model, 512, rng))
            rows["tg"].append(decode_rate(model, 128, run))
            if tools is not None:
                rows["llama_pp"].append(
                    llama_bench(tools, path, threads, prompt=512, gen=0, extra_buffers=extra)
                )
                rows["llama_tg"].append(
                    llama_bench(tools, path, threads, prompt=0, gen=128, extra_buffers=extra)
                )
    sched = Scheduler(base, SchedulerConfig(parallel=STREAMS, keep_alive=-1))
    try:
        for _ in range(args.runs):
            agg, _ttft = concurrent_decode_rate(
                sched, str(path), streams=STREAMS, prompt=32, gen=128, rng=rng, vocab=vocab
            )
            rows["agg"].append(agg)
            if tools is not None:
                rows["llama_agg"].append(
                    llama_batched_bench(
                        tools, path, threads, streams=STREAMS, prompt=32, gen=128, extra_buffers=extra
                    )
                )
    finally:
        sched.close()
    print(f"{path.name}, {threads} threads, median of {args.runs} runs")
    print(f"  {candor_build()}; CPU buffers: {buffers}")
    if tools is not None:
        repack = "" if extra else ", run with --repack 0 / --no-repack to hold weights as candor does"
        print(f"  {tools_build(tools)}{repack}")
    figures = [
        ("prefill pp512", "pp", "llama_pp", "llama-bench"),
        ("decode tg128", "tg", "llama_tg", "llama-bench"),
        (f"{STREAMS} streams x 128 tokens", "agg", "llama_agg", "llama-batched-bench"),
    ]
    for label, ours, theirs, tool in figures:
        line = f"  {label:<24} candor {_median(rows[ours]):8.1f} t/s"
        if rows[theirs]:
            ratio = _median(rows[ours]) / _median(rows[theirs])
            line += f"   {tool} {_median(rows[theirs]):8.1f} t/s   ratio {ratio:.3f}"
        print(line)
    if tools is None:
        print(
            "  (llama.cpp's tools were not found; build them as docs/performance.md says"
            " and pass --llama-tools DIR)"
        )
    return 0
