#!/usr/bin/env python3
"""candor's generate() path against llama.cpp's own llama-bench, in one run, alternating.

Decode (tg128) and prefill (pp512) on the same model file and thread count. candor is measured
through its public API with the default sampler chain and ignore_eos; tokens are counted by the
engine (Usage), never by text chunks. Prints both ratios with their spread, and a JSON line.

    python benchmarks/bench_vs_llama_bench.py [--model PATH] [--threads 2] [--runs 5] [--llama-tools DIR]

llama-bench comes from `--llama-tools DIR`, $PATH, or the cache that shared/bench/build-llama-tools
fills (llama.cpp built at the exact commit of the installed llama-cpp-python); see docs/performance.md.
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
    decode_rate,
    find_llama_tools,
    llama_bench,
    prefill_rate,
    spread,
    tools_build,
)

import candor


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF path (default: candor's embedded default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llama-tools", help="folder with llama-bench")
    args = parser.parse_args()

    tools = find_llama_tools(args.llama_tools)
    if tools is None:
        sys.exit(
            "llama-bench not found. Build llama.cpp's tools at the commit of llama-cpp-python "
            f"{llama_cpp.__version__} (see docs/performance.md) and pass --llama-tools DIR."
        )
    model = candor.load(args.model, threads=args.threads)
    path, buffers = model.path, model.cpu_buffers.why
    rng = random.Random(0)
    rows: dict[str, list[float]] = {k: [] for k in ("llama_tg", "candor_tg", "llama_pp", "candor_pp")}
    decode_rate(model, 16, 0)  # warm-up, as llama-bench does its own
    for run in range(args.runs):
        # Alternate who goes first so that drift on a shared machine hits both sides alike.
        order = ["llama", "candor"] if run % 2 == 0 else ["candor", "llama"]
        for who in order:
            if who == "llama":
                rows["llama_tg"].append(llama_bench(tools, path, args.threads, prompt=0, gen=128))
                rows["llama_pp"].append(llama_bench(tools, path, args.threads, prompt=512, gen=0))
            else:
                rows["candor_tg"].append(decode_rate(model, 128, run))
                rows["candor_pp"].append(prefill_rate(model, 512, rng))
        print(
            f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()),
            file=sys.stderr,
        )
    model.close()

    tg_ratios = [c / ll for c, ll in zip(rows["candor_tg"], rows["llama_tg"], strict=True)]
    pp_ratios = [c / ll for c, ll in zip(rows["candor_pp"], rows["llama_pp"], strict=True)]
    print(
        f"model {path.name}, {args.threads} threads, {args.runs} alternating runs, "
        f"llama-cpp-python {llama_cpp.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"{candor_build()}; CPU buffers: {buffers}")
    print(tools_build(tools))
    print(
        f"decode  tg128  llama-bench {spread(rows['llama_tg'])} t/s   candor {spread(rows['candor_tg'])} t/s"
    )
    print(
        f"prefill pp512  llama-bench {spread(rows['llama_pp'])} t/s   candor {spread(rows['candor_pp'])} t/s"
    )
    print(f"ratio decode  candor/llama-bench: {spread(tg_ratios)}")
    print(f"ratio prefill candor/llama-bench: {spread(pp_ratios)}")
    print(
        json.dumps(
            {
                "model": path.name,
                "threads": args.threads,
                "runs": args.runs,
                **rows,
                "decode_ratio_median": statistics.median(tg_ratios),
                "prefill_ratio_median": statistics.median(pp_ratios),
            }
        )
    )


if __name__ == "__main__":
    main()
