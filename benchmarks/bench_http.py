#!/usr/bin/env python3
"""`candor serve` against llama-server over HTTP, same model, threads, slots and context, alternating.

Uses the team's client scripts (shared/bench/load.py: concurrent streaming clients, tokens counted from
`usage`; shared/bench/prefix_ttft.py: a second chat turn over a ~1,000-token history). Every server is
warmed with one request first (llama-server loads its model at start; candor on first use).

llama-server runs twice a round: as upstream runs by default (weights mapped from the file), and holding
the weights as candor's runner does (`--load-mode none`, glibc asked for huge pages), so that the second
ratio is candor's own overhead over the same memory layout.

    python benchmarks/bench_http.py [--runs 3] [--llama-tools DIR] [--shared-bench ../shared/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from harness import find_llama_tools, free_port, held_in_ram, spread, wait_ready

from candor.store import Store

SLOTS = 8
CTX = 4096


def client(script: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, str(script), *args], check=True, capture_output=True, text=True
    ).stdout


def measure(url: str, model: str, bench: Path) -> dict[str, float]:
    """1 stream, 8 streams, and the prefix TTFT ratio, after one warm-up request."""
    httpx.post(url + "/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 4}, timeout=300)
    one = json.loads(
        client(bench / "load.py", url, model, "--clients", "1", "--requests", "3").splitlines()[-1]
    )
    eight = json.loads(
        client(bench / "load.py", url, model, "--clients", "8", "--requests", "16").splitlines()[-1]
    )
    ratio = client(bench / "prefix_ttft.py", url, model)
    found = re.search(r"ratio: ([0-9.]+) \(cold ([0-9.]+)s, warm ([0-9.]+)s\)", ratio)
    assert found, ratio
    return {
        "one": one["tokens_per_s"],
        "eight": eight["tokens_per_s"],
        "ttft8": eight["ttft_median_s"],
        "errors": one["errors"] + eight["errors"],
        "warm": float(found.group(3)),
        "cold": float(found.group(2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-tools")
    parser.add_argument(
        "--shared-bench", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench")
    )
    args = parser.parse_args()
    tools = find_llama_tools(args.llama_tools)
    bench = Path(args.shared_bench)
    if tools is None or not (bench / "load.py").is_file():
        raise SystemExit(
            "need llama.cpp's tools (--llama-tools) and the shared client scripts (--shared-bench)"
        )
    model_path = Path(Store().builtin_entry().path)
    rows: dict[str, list[dict[str, float]]] = {"llama": [], "llama_ram": [], "candor": []}
    candor_env = {**os.environ, "CANDOR_THREADS": str(args.threads), "CANDOR_CTX": str(CTX)}
    for run in range(args.runs):
        order = list(rows)[run % 3 :] + list(rows)[: run % 3]  # each goes first, second and third in turn
        for who in order:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env: dict[str, str] | None = candor_env
            if who.startswith("llama"):
                cmd = [
                    str(tools / "llama-server"),
                    "-m",
                    str(model_path),
                    "-t",
                    str(args.threads),
                    "-c",
                    str(CTX * SLOTS),
                    "-np",
                    str(SLOTS),
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                ]
                cmd, env = held_in_ram(cmd, who == "llama_ram")
                ready, model = "/health", "gemma"
            else:
                code = (
                    "import uvicorn\nfrom candor.scheduler import Scheduler, SchedulerConfig\n"
                    "from candor.server.app import create_app\n"
                    f"c = SchedulerConfig(parallel={SLOTS}, allow_paths=False, keep_alive=-1)\n"
                    "app = create_app(scheduler=Scheduler(config=c))\n"
                    f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')\n"
                )
                cmd = [sys.executable, "-c", code]
                ready, model = "/", "gemma-3-270m:Q4_K_M"
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_ready(url, ready)
                rows[who].append(measure(url, model, bench))
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"run {run + 1} {who}: {rows[who][-1]}", file=sys.stderr)

    def col(who: str, key: str) -> list[float]:
        return [r[key] for r in rows[who]]

    def pairs(key: str, llama: str) -> str:
        return spread([c / ll for c, ll in zip(col("candor", key), col(llama, key), strict=True)])

    print(f"{model_path.name}, {args.threads} threads, {SLOTS} slots, {args.runs} alternating runs over HTTP")
    print("llama-server: as upstream runs by default / with the weights in memory as candor holds them")
    for key, what in (
        ("one", "1 stream   t/s"),
        ("eight", "8 streams  t/s"),
        ("ttft8", "8 streams median TTFT s"),
        ("warm", "second-turn TTFT s"),
    ):
        print(
            f"{what}: llama-server {spread(col('llama', key))} / {spread(col('llama_ram', key))}"
            f"  candor {spread(col('candor', key))}  ratio {pairs(key, 'llama')} / {pairs(key, 'llama_ram')}"
        )
    errors = {who: round(sum(col(who, "errors"))) for who in rows}
    print(f"errors: llama-server {errors['llama']} / {errors['llama_ram']}, candor {errors['candor']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
