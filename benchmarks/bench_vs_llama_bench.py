#!/usr/bin/env python3
"""candor's generate() path against llama.cpp's own llama-bench, in one run, alternating.

Decode (tg128) and prefill (pp512) on the same model file and thread count. candor is measured
through its public API with the default sampler chain and ignore_eos; tokens are counted by the
engine (Usage), never by text chunks. Prints both ratios with their spread, and a JSON line.

    python benchmarks/bench_vs_llama_bench.py [--model PATH] [--threads 2] [--runs 5] [--llama-tools DIR]

Long context (issue 16): `--prompt-tokens 16384 --depth 16384` compares prefill of 16,384 tokens
(`llama-bench -p 16384 -n 0`) and decoding 128 tokens after 16,384 tokens are in the cache
(`llama-bench -p 0 -n 128 -d 16384`). llama-bench fills its depth with random token ids; candor's
depth is real text (harness.document(), cut to exactly that many tokens), read once and not timed:
only the 128 decoded tokens are. Prefill is random tokens on both sides, fresh each run.

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
    decode_rate_at_depth,
    document,
    find_llama_tools,
    llama_bench,
    prefill_rate,
    spread,
    tools_build,
)

import candor

GEN = 128
DEFAULT_CTX = 4096  # candor's CANDOR_CTX default, enough for pp512 and tg128


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF path (default: candor's embedded default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llama-tools", help="folder with llama-bench")
    parser.add_argument("--prompt-tokens", type=int, default=512, help="prefill size (512; 16384 long)")
    parser.add_argument(
        "--depth", type=int, default=0, help="tokens in the cache before the 128 decoded (0; 16384 long)"
    )
    args = parser.parse_args()
    if args.runs < 1 or args.prompt_tokens < 1 or args.depth < 0:
        sys.exit("--runs and --prompt-tokens must be at least 1, --depth at least 0")
    pp, tg = f"pp{args.prompt_tokens}", f"tg{GEN}" + (f" @ d{args.depth}" if args.depth else "")

    tools = find_llama_tools(args.llama_tools)
    if tools is None:
        sys.exit(
            "llama-bench not found. Build llama.cpp's tools at the commit of llama-cpp-python "
            f"{llama_cpp.__version__} (see docs/performance.md) and pass --llama-tools DIR."
        )
    # A context as large as the longest test needs (llama-bench sizes each test's the same way).
    needed = max(args.prompt_tokens + 1, args.depth + GEN + 2)
    model = candor.load(args.model, threads=args.threads, ctx=max(needed, DEFAULT_CTX))
    path, buffers = model.path, model.cpu_buffers.why
    rng = random.Random(0)
    depth_prompt: list[int] = []
    if args.depth:
        # about 1.5 tokens a word in English: enough text, then exactly `depth` tokens of it
        depth_prompt = model.tokenize(document(0, args.depth))[: args.depth]
        if len(depth_prompt) < args.depth:
            sys.exit(f"the depth text gave {len(depth_prompt)} tokens, fewer than {args.depth}")
    rows: dict[str, list[float]] = {k: [] for k in ("llama_tg", "candor_tg", "llama_pp", "candor_pp")}
    decode_rate(model, 16, 0)  # warm-up, as llama-bench does its own
    for run in range(args.runs):
        # Alternate who goes first so that drift on a shared machine hits both sides alike.
        order = ["llama", "candor"] if run % 2 == 0 else ["candor", "llama"]
        for who in order:
            if who == "llama":
                rows["llama_tg"].append(
                    llama_bench(tools, path, args.threads, prompt=0, gen=GEN, depth=args.depth)
                )
                rows["llama_pp"].append(
                    llama_bench(tools, path, args.threads, prompt=args.prompt_tokens, gen=0)
                )
            else:
                if args.depth:
                    rows["candor_tg"].append(decode_rate_at_depth(model, depth_prompt, GEN, run))
                else:
                    rows["candor_tg"].append(decode_rate(model, GEN, run))
                rows["candor_pp"].append(prefill_rate(model, args.prompt_tokens, rng))
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
    if args.depth:
        print("depth: llama-bench random token ids, candor real text (harness.document()); only decode timed")
    print(
        f"decode  {tg}  llama-bench {spread(rows['llama_tg'])} t/s   candor {spread(rows['candor_tg'])} t/s"
    )
    print(
        f"prefill {pp}  llama-bench {spread(rows['llama_pp'])} t/s   candor {spread(rows['candor_pp'])} t/s"
    )
    print(f"ratio decode  {tg} candor/llama-bench: {spread(tg_ratios)}")
    print(f"ratio prefill {pp} candor/llama-bench: {spread(pp_ratios)}")
    print(
        json.dumps(
            {
                "model": path.name,
                "threads": args.threads,
                "runs": args.runs,
                "prompt_tokens": args.prompt_tokens,
                "depth": args.depth,
                "gen": GEN,
                **rows,
                "decode_ratio_median": statistics.median(tg_ratios),
                "prefill_ratio_median": statistics.median(pp_ratios),
            }
        )
    )


if __name__ == "__main__":
    main()
