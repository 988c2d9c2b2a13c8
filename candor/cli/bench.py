"""`candor bench`: candor's prefill and decode speed here, beside llama.cpp's own tools when present."""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import candor
from candor.benchmark import (
    candor_build,
    concurrent_decode_rate,
    decode_rate,
    find_llama_tools,
    llama_batched_bench,
    llama_bench,
    prefill_rate,
    tools_build,
)
from candor.config import Settings
from candor.scheduler import Scheduler, SchedulerConfig

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
