#!/usr/bin/env python3
"""Two revisions of candor against llama.cpp's own tools in one run: did a change cost speed?

Each round, in turn (the order rotates): llama-bench tg128, and one 128-token stream through each
revision's scheduler (decode t/s); then over HTTP, llama-server and each revision's server under the
shared load client, with 1 and 8 concurrent streams. Every candor figure is a ratio to llama.cpp's in the
same round; the verdict asks whether the new revision's median ratio lies within the old one's min..max.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_revisions.py --before /tmp/before --llama-tools DIR [--rounds 5]

Each revision runs from its own source tree (PYTHONPATH), with this machine's llama-cpp-python.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from harness import free_port, spread, wait_ready

SLOTS = 8
CTX = 4096
GEN = 128
# One stream through a revision's scheduler: median decode t/s of 3 requests after a warm-up. Only
# APIs every revision has: Scheduler.generate on token ids with SamplingParams.
ONE_STREAM = """
import statistics, sys
from candor.scheduler import Scheduler, SchedulerConfig
from candor.types import SamplingParams
sched = Scheduler(config=SchedulerConfig(keep_alive=-1))
try:
    rates = []
    for seed in range(4):
        params = SamplingParams(max_tokens={gen}, ignore_eos=True, seed=seed)
        last = list(sched.generate(None, [2], params=params))[-1]
        rates.append(last.timings.decode_tokens_per_second(last.usage))
    print("RATE", statistics.median(rates[1:]))
finally:
    sched.close()
"""
SERVE = """
import uvicorn
from candor.scheduler import Scheduler, SchedulerConfig
from candor.server.app import create_app
config = SchedulerConfig(parallel={slots}, allow_paths=False, keep_alive=-1)
app = create_app(scheduler=Scheduler(config=config))
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def tree_env(tree: Path, threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CANDOR_THREADS": str(threads),
        "CANDOR_CTX": str(CTX),
    }


def one_stream(tree: Path, threads: int) -> float:
    code = ONE_STREAM.format(gen=GEN)
    done = subprocess.run(
        [sys.executable, "-c", code], env=tree_env(tree, threads), capture_output=True, text=True, check=True
    )
    return float([x for x in done.stdout.splitlines() if x.startswith("RATE")][-1].split()[1])


def llama_bench(tools: Path, model: Path, threads: int, repack: bool) -> float:
    cmd = [str(tools / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(GEN)]
    cmd += ["-r", "3", "-o", "jsonl", "--repack", "1" if repack else "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads([x for x in out.splitlines() if x.startswith("{")][-1])["avg_ts"])


def load(bench: Path, url: str, model: str, clients: int, requests: int) -> float:
    args = [url, model, "--clients", str(clients), "--requests", str(requests), "--max-tokens", str(GEN)]
    out = subprocess.run(
        [sys.executable, str(bench / "load.py"), *args], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out.splitlines()[-1])
    if result["errors"]:
        raise SystemExit(f"{url}: {result['errors']} requests failed: {result['last_error']}")
    return float(result["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="source tree of the old revision")
    parser.add_argument(
        "--after", default=str(Path(__file__).resolve().parents[1]), help="the new (this tree)"
    )
    parser.add_argument("--llama-tools", required=True, help="folder with llama-bench and llama-server")
    parser.add_argument("--model", help="GGUF file (default: the default model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--shared-bench", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench")
    )
    parser.add_argument("--repack", action="store_true", help="llama-bench with repacking (candor loads so)")
    args = parser.parse_args()
    tools, bench = Path(args.llama_tools), Path(args.shared_bench)
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    if args.model:
        model = Path(args.model)
    else:
        from candor.store import Store

        model = Path(Store().builtin_entry().path)
    servers: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
    try:
        port = free_port()
        cmd = [str(tools / "llama-server"), "-m", str(model), "-t", str(args.threads), "-c", str(CTX * SLOTS)]
        cmd += ["-np", str(SLOTS), "--port", str(port), "--host", "127.0.0.1"]
        logs = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
        print(f"server logs in {logs}", file=sys.stderr)
        errors = (logs / "llama-server.log").open("wb")
        servers["llama"] = (subprocess.Popen(cmd, stderr=errors), f"http://127.0.0.1:{port}", "m")
        for name, tree in trees.items():
            port = free_port()
            code = SERVE.format(slots=SLOTS, port=port)
            errors = (logs / f"candor-{name}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-c", code], env=tree_env(tree, args.threads), stderr=errors
            )
            servers[name] = (proc, f"http://127.0.0.1:{port}", "gemma-3-270m:Q4_K_M")
        for name, (_, url, served) in servers.items():
            wait_ready(url, "/health" if name == "llama" else "/")
            httpx.post(
                url + "/v1/completions", json={"model": served, "prompt": "Hi", "max_tokens": 4}, timeout=300
            )
        ratios: dict[str, dict[str, list[float]]] = {n: {"one": [], "http1": [], "http8": []} for n in trees}
        for round_ in range(args.rounds):
            names = list(trees)[round_ % 2 :] + list(trees)[: round_ % 2]
            rates = {n: one_stream(trees[n], args.threads) for n in names[:1]}
            reference = llama_bench(tools, model, args.threads, args.repack)
            rates.update({n: one_stream(trees[n], args.threads) for n in names[1:]})
            http: dict[str, tuple[float, float]] = {}
            for name in ["llama", *names] if round_ % 2 == 0 else [*names, "llama"]:
                _, url, served = servers[name]
                http[name] = (load(bench, url, served, 1, 3), load(bench, url, served, 8, 16))
            for name in trees:
                ratios[name]["one"].append(rates[name] / reference)
                ratios[name]["http1"].append(http[name][0] / http["llama"][0])
                ratios[name]["http8"].append(http[name][1] / http["llama"][1])
            print(f"round {round_ + 1}: {json.dumps(ratios)}", file=sys.stderr)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    print(f"{model.name}, {args.threads} threads, {args.rounds} alternating rounds")
    print(f"before: {trees['before']}\nafter:  {trees['after']}")
    labels = {
        "one": "1 stream (scheduler) / llama-bench tg128",
        "http1": "HTTP 1 stream / llama-server",
        "http8": f"HTTP {SLOTS} streams / llama-server",
    }
    for key, label in labels.items():
        before, after = ratios["before"][key], ratios["after"][key]
        inside = min(before) <= statistics.median(after) <= max(before)
        verdict = "within" if inside else ("above" if statistics.median(after) > max(before) else "BELOW")
        print(
            f"{label}: before {spread(before)}  after {spread(after)}"
            f"  -> after's median {verdict} before's range"
        )


if __name__ == "__main__":
    main()
