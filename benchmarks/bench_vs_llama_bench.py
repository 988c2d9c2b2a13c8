#!/usr/bin/env python3
"""candor's generate() path against llama.cpp's own llama-bench, in one run, alternating.

Decode (tg128) and prefill (pp512) on the same model file and thread count. candor is measured
through its public API with the default sampler chain and ignore_eos; tokens are counted by the
engine (Usage), never by text chunks. Prints both ratios with their spread, and a JSON line.

    python benchmarks/bench_vs_llama_bench.py [--model PATH] [--threads 2] [--runs 5] [--llama-tools DIR]

llama-bench comes from `--llama-tools DIR`, $PATH, or the cache that shared/bench/build-llama-tools
fills (llama.cpp built at the exact commit of the installed llama-cpp-python); see the README.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp

import candor


def find_llama_bench(explicit: str | None) -> Path:
    """Locate llama-bench built at the same llama.cpp commit as llama-cpp-python."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit) / "llama-bench")
    if found := shutil.which("llama-bench"):
        candidates.append(Path(found))
    cache = os.environ.get("CANDOR_REF_DIR", str(Path.home() / ".cache" / "candor-ref"))
    candidates += [
        Path(p) for p in glob.glob(f"{cache}/llama-cpp-python-{llama_cpp.__version__}/build/bin/llama-bench")
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    sys.exit(
        "llama-bench not found. Build llama.cpp's tools at the commit of llama-cpp-python "
        f"{llama_cpp.__version__} (see README, 'Performance') and pass --llama-tools DIR."
    )


def llama_bench(binary: Path, model: Path, threads: int, *, prompt: int, gen: int) -> float:
    """One llama-bench measurement (it warms up first); returns tokens/s."""
    cmd = [
        str(binary),
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
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def candor_decode(model: candor.Model, n: int, seed: int) -> float:
    """Decode n tokens from a one-token prompt with the default sampler chain; tokens/s after the first."""
    bos = model.tokenize("", add_special=True) or [random.randrange(1000, 2000)]
    done = model.generate(bos, stream=False, max_tokens=n, ignore_eos=True, seed=seed)
    assert done.usage.completion_tokens == n, done.usage
    return done.timings.decode_tokens_per_second(done.usage)


def candor_prefill(model: candor.Model, n: int, rng: random.Random, vocab: int) -> float:
    """Evaluate an n-token prompt of random tokens (as llama-bench does); prompt tokens/s."""
    prompt = [rng.randrange(1000, vocab - 1) for _ in range(n)]  # fresh tokens: no prefix to reuse
    done = model.generate(prompt, stream=False, max_tokens=1, ignore_eos=True)
    return done.timings.prompt_tokens_per_second(done.usage)


def spread(values: list[float]) -> str:
    """median [min..max]."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF path (default: candor's embedded default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llama-tools", help="folder with llama-bench")
    args = parser.parse_args()

    binary = find_llama_bench(args.llama_tools)
    model = candor.load(args.model, threads=args.threads)
    path = model.path
    vocab = model.card.vocab_size or 32000
    rng = random.Random(0)
    rows: dict[str, list[float]] = {k: [] for k in ("llama_tg", "candor_tg", "llama_pp", "candor_pp")}
    candor_decode(model, 16, 0)  # warm-up, as llama-bench does its own
    for run in range(args.runs):
        # Alternate who goes first so that drift on a shared machine hits both sides alike.
        order = ["llama", "candor"] if run % 2 == 0 else ["candor", "llama"]
        for who in order:
            if who == "llama":
                rows["llama_tg"].append(llama_bench(binary, path, args.threads, prompt=0, gen=128))
                rows["llama_pp"].append(llama_bench(binary, path, args.threads, prompt=512, gen=0))
            else:
                rows["candor_tg"].append(candor_decode(model, 128, run))
                rows["candor_pp"].append(candor_prefill(model, 512, rng, vocab))
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
