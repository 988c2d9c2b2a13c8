#!/usr/bin/env python3
"""Do llama.cpp's extra CPU buffer types (repacked weights) pay on this machine? One run, alternating.

llama-bench, with the weights held as a candor runner holds them (read into memory, huge pages asked
for), decodes (tg128) and reads prompts (pp512) with its extra buffer types (`--repack 1`, upstream's
default) and without (`--repack 0`, what candor loads with where the CPU self-test found one that
crashes). Pass the tools of a build that runs on this CPU: on a machine whose AMX crashes, a build
without AMX (docs/install.md), whose only extra buffer type is then CPU_REPACK.

    python benchmarks/bench_cpu_buffers.py --llama-tools DIR [--model PATH] [--threads 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness import find_llama_tools, llama_bench, spread, tools_build

from candor.config import Settings
from candor.store import Store


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
            "llama-bench not found; build llama.cpp's tools (docs/performance.md) and pass --llama-tools"
        )
    path: Path = Store(Settings.from_env()).resolve(args.model)[0]
    rows: dict[str, list[float]] = {k: [] for k in ("tg_repack", "tg_plain", "pp_repack", "pp_plain")}
    for run in range(args.runs):
        order = [True, False] if run % 2 == 0 else [False, True]
        for extra in order:
            name = "repack" if extra else "plain"
            for figure, prompt, gen in (("tg", 0, 128), ("pp", 512, 0)):
                rows[f"{figure}_{name}"].append(
                    llama_bench(
                        tools, path, args.threads, prompt=prompt, gen=gen, in_ram=True, extra_buffers=extra
                    )
                )
        print(
            f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()),
            file=sys.stderr,
        )
    print(
        f"model {path.name}, {args.threads} threads, {args.runs} alternating runs, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(tools_build(tools))
    for figure, label in (("tg", "decode  tg128"), ("pp", "prefill pp512")):
        ratios = [a / b for a, b in zip(rows[f"{figure}_plain"], rows[f"{figure}_repack"], strict=True)]
        print(
            f"{label}: --repack 1 {spread(rows[f'{figure}_repack'])} t/s, --repack 0 "
            f"{spread(rows[f'{figure}_plain'])} t/s; without/with {spread(ratios)}"
        )
    print(json.dumps({"model": path.name, "threads": args.threads, **rows}))


if __name__ == "__main__":
    main()
