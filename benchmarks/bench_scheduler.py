#!/usr/bin/env python3
"""candor's scheduler (runner process, continuous batching) against llama.cpp's own tools, one run.

Three figures, each alternating candor and llama.cpp at least --runs times on the same model and threads:
  1. one stream:  decode t/s through the scheduler  vs  llama-bench tg128
  2. 8 streams of 128 tokens, default sampler chain: aggregate decode t/s  vs  llama-batched-bench
     (8 sequences, 128 generated tokens each; it samples nothing, so it is the ceiling)
  3. a second chat turn over a ~1,000-token history: time to first token vs the first turn's
llama.cpp's tools run twice for 1 and 2: as upstream runs by default (weights mapped from the file), and
holding the weights as candor's runner does (read into memory on huge pages, `--load-mode none`), so
that the second ratio is candor's own overhead over the same memory layout.

    python benchmarks/bench_scheduler.py [--model PATH] [--threads 2] [--runs 5] [--llama-tools DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import llama_cpp
from harness import (
    candor_build,
    concurrent_decode_rate,
    find_llama_tools,
    llama_batched_bench,
    llama_bench,
    spread,
    tools_build,
)

from candor.config import Settings
from candor.engine.cpu_selftest import choose_cpu_buffers
from candor.scheduler import Scheduler, SchedulerConfig
from candor.types import SamplingParams

STREAMS = 8
GEN = 128
PROMPT = 32


def one_stream(sched: Scheduler, seed: int) -> float:
    """Decode t/s of one 128-token request through the scheduler (tokens after the first, as tg128)."""
    chunks = list(
        sched.generate(None, [2], params=SamplingParams(max_tokens=GEN, ignore_eos=True, seed=seed))
    )
    last = chunks[-1]
    assert last.usage is not None and last.timings is not None and last.usage.completion_tokens == GEN
    return last.timings.decode_tokens_per_second(last.usage)


def history(rng: random.Random) -> str:
    """About 1,000 tokens of varied text, different every call (so nothing is cached before turn 1)."""
    words = [
        "river",
        "mountain",
        "engine",
        "garden",
        "signal",
        "market",
        "winter",
        "library",
        "harbour",
        "planet",
    ]
    return " ".join(f"{rng.choice(words)}-{rng.randrange(10_000)}" for _ in range(330))


def chat_turns(sched: Scheduler, rng: random.Random) -> tuple[float, float]:
    """Time to first token of turn 1 (long history, cold) and turn 2 (the same history plus one exchange)."""
    params = SamplingParams(max_tokens=16, temperature=0)
    messages = [{"role": "user", "content": "Here are my notes:\n" + history(rng) + "\nSummarise them."}]

    def ttft(msgs: list[dict[str, str]]) -> tuple[float, str]:
        started = time.perf_counter()
        first = None
        text = []
        for chunk in sched.chat(None, msgs, params=params):
            if first is None:
                first = time.perf_counter() - started
            text.append(chunk.text)
        return first or 0.0, "".join(text)

    first, answer = ttft(messages)
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Now in one word?"}]
    second, _ = ttft(messages)
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF path (default: candor's embedded default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llama-tools", help="folder with llama-bench and llama-batched-bench")
    args = parser.parse_args()
    tools = find_llama_tools(args.llama_tools)
    if tools is None:
        sys.exit(
            f"llama.cpp's tools not found for llama-cpp-python {llama_cpp.__version__}; "
            "see docs/performance.md"
        )
    settings = Settings.from_env()
    settings = Settings(home=settings.home, ctx=4096, threads=args.threads, batch=512, gpu_layers=0)
    sched = Scheduler(settings, SchedulerConfig(parallel=STREAMS, keep_alive=-1))
    loaded = sched.load(args.model)
    path, vocab = loaded.path, loaded.card.vocab_size or 32000
    rng = random.Random(0)
    one_stream(sched, 0)  # warm-up
    concurrent_decode_rate(sched, None, streams=STREAMS, prompt=PROMPT, gen=GEN, rng=rng, vocab=vocab)
    keys = ("llama_tg", "llama_tg_ram", "candor_tg", "batched", "batched_ram", "candor_8", "ttft_8")
    rows: dict[str, list[float]] = {k: [] for k in (*keys, "turn1", "turn2")}
    for run in range(args.runs):
        order = ["llama", "candor"] if run % 2 == 0 else ["candor", "llama"]
        for who in order:
            if who == "llama":
                for in_ram, suffix in ((False, ""), (True, "_ram")):
                    rows["llama_tg" + suffix].append(
                        llama_bench(tools, path, args.threads, prompt=0, gen=GEN, in_ram=in_ram)
                    )
                    rows["batched" + suffix].append(
                        llama_batched_bench(
                            tools, path, args.threads, streams=STREAMS, prompt=PROMPT, gen=GEN, in_ram=in_ram
                        )
                    )
            else:
                rows["candor_tg"].append(one_stream(sched, run))
                agg, ttft = concurrent_decode_rate(
                    sched, None, streams=STREAMS, prompt=PROMPT, gen=GEN, rng=rng, vocab=vocab
                )
                rows["candor_8"].append(agg)
                rows["ttft_8"].append(ttft)
                first, second = chat_turns(sched, rng)
                rows["turn1"].append(first)
                rows["turn2"].append(second)
        print(
            f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rows.items()),
            file=sys.stderr,
        )
    sched.close()

    def ratios(ours: str, theirs: str) -> list[float]:
        return [c / ll for c, ll in zip(rows[ours], rows[theirs], strict=True)]

    tg, tg_ram = ratios("candor_tg", "llama_tg"), ratios("candor_tg", "llama_tg_ram")
    agg, agg_ram = ratios("candor_8", "batched"), ratios("candor_8", "batched_ram")
    turns = [b / a for a, b in zip(rows["turn1"], rows["turn2"], strict=True)]
    print(
        f"model {path.name}, {args.threads} threads, {args.runs} alternating runs, through the scheduler "
        f"(runner process, {STREAMS} slots)"
    )
    buffers = choose_cpu_buffers(settings.cpu_buffers, settings.home).why
    print(f"{candor_build()}; CPU buffers: {buffers}")
    print(tools_build(tools))
    print(
        f"1 stream   decode: llama-bench tg128 {spread(rows['llama_tg'])} (weights in memory "
        f"{spread(rows['llama_tg_ram'])})  candor {spread(rows['candor_tg'])}"
    )
    print(
        f"8 streams  decode: batched-bench {spread(rows['batched'])} (weights in memory "
        f"{spread(rows['batched_ram'])})  candor {spread(rows['candor_8'])} t/s "
        f"(median TTFT {statistics.median(rows['ttft_8']):.3f} s)"
    )
    print(f"chat turn TTFT: first {spread(rows['turn1'])} s, second {spread(rows['turn2'])} s")
    print(f"ratio 1-stream decode candor/llama-bench:          {spread(tg)}")
    print(f"  same, llama-bench with the weights in memory:    {spread(tg_ram)}")
    print(f"ratio 8-stream aggregate candor/llama-batched-bench: {spread(agg)}")
    print(f"  same, batched-bench with the weights in memory:    {spread(agg_ram)}")
    print(f"ratio second-turn TTFT / first-turn TTFT:          {spread(turns)}")
    print(json.dumps({"model": path.name, "threads": args.threads, **rows}))


if __name__ == "__main__":
    main()
