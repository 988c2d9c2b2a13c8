#!/usr/bin/env python3
"""Soak `candor serve`: concurrent streaming clients on the default model for a while, then the figures.

Starts a real `candor serve` on a free loopback port (a private CANDOR_HOME, the embedded default model),
runs `--clients` clients that each stream chat requests back to back (Ollama's /api/chat and OpenAI's
/v1/chat/completions in turn), and samples the server and its runner processes from /proc: resident
memory, open file descriptors, threads. It fails (exit status 1) on any request error, on resident memory
that grew by 10% or more after the warm-up, or on descriptors or threads that grew.

    python scripts/soak.py                   # 30 minutes, 8 clients
    python scripts/soak.py --minutes 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]
from live_server import start_server, stop_server  # noqa: E402  (the tests' server helpers)

MODEL = "gemma-3-270m:Q4_K_M"
RSS_GROWTH_LIMIT = 0.10  # a fraction of the resident memory after the warm-up
EDGE_SAMPLES = 3  # samples averaged at each end of the measured window (one sample can catch a spike)
PROMPTS = (
    "Describe a lighthouse at night.",
    "Write a short letter to a friend about the weather.",
    "List some things found in a kitchen.",
    "Tell me about the history of bread.",
    "What makes a good story?",
    "Explain how a bicycle works.",
)


# -- /proc -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One process at one moment."""

    pid: int
    role: str  # "server" or "runner"
    rss: int  # bytes
    fds: int
    threads: int


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def sample_process(pid: int, role: str) -> ProcSample:
    """RSS, descriptor and thread counts of one process."""
    status = _status(pid)
    return ProcSample(
        pid=pid,
        role=role,
        rss=int(status["VmRSS"].split()[0]) * 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
    )


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def sample_tree(server_pid: int) -> list[ProcSample]:
    """The server and its runner children (a process that ends meanwhile is left out)."""
    samples = []
    for pid, role in [(server_pid, "server"), *((c, "runner") for c in children_of(server_pid))]:
        try:
            samples.append(sample_process(pid, role))
        except (OSError, KeyError):
            continue
    return samples


# -- clients ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients did (they share one event loop)."""

    requests: int = 0
    tokens: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, tokens: int) -> None:
        self.requests += 1
        self.tokens += tokens

    def error(self, text: str) -> None:
        self.errors.append(text)


async def ollama_chat(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> int:
    """One streamed /api/chat; its generated token count. Raises on anything but a clean finish."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"num_predict": max_tokens},
    }
    last: dict[str, Any] = {}
    async with client.stream("POST", url + "/api/chat", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(
                f"/api/chat answered {response.status_code}: {(await response.aread())[:200]!r}"
            )
        async for line in response.aiter_lines():
            if line:
                last = json.loads(line)
                if "error" in last:
                    raise RuntimeError(f"/api/chat streamed an error: {last['error']}")
    if not last.get("done") or not isinstance(last.get("eval_count"), int):
        raise RuntimeError(f"/api/chat ended without its final line: {last}")
    return int(last["eval_count"])


async def openai_chat(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> int:
    """One streamed /v1/chat/completions with usage; its generated token count."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    usage: dict[str, Any] | None = None
    finished = done = False
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"/v1/chat/completions answered {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"/v1/chat/completions streamed an error: {event['error']}")
            finished |= any(c.get("finish_reason") for c in event.get("choices") or ())
            usage = event.get("usage") or usage
    if not (finished and done and usage):
        raise RuntimeError("/v1/chat/completions ended without finish_reason, usage and [DONE]")
    return int(usage["completion_tokens"])


async def client_loop(index: int, url: str, max_tokens: int, tally: Tally) -> None:
    """Stream requests back to back over one keep-alive connection, until cancelled."""
    n = 0
    async with httpx.AsyncClient(timeout=300) as client:
        while True:
            prompt = PROMPTS[(index + n) % len(PROMPTS)]
            call = ollama_chat if (index + n) % 2 == 0 else openai_chat
            n += 1
            try:
                tally.add(await call(client, url, prompt, max_tokens))
            except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
                tally.error(f"client {index}: {type(exc).__name__}: {exc}")


# -- the verdict -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The process tree at one moment, summed by role."""

    at: float  # seconds since the start
    rss: dict[str, int]  # role -> bytes
    fds: dict[str, int]
    threads: dict[str, int]
    pids: tuple[int, ...]


def snapshot(server_pid: int, started: float) -> Snapshot:
    samples = sample_tree(server_pid)
    roles = sorted({s.role for s in samples})
    return Snapshot(
        at=time.monotonic() - started,
        rss={r: sum(s.rss for s in samples if s.role == r) for r in roles},
        fds={r: sum(s.fds for s in samples if s.role == r) for r in roles},
        threads={r: sum(s.threads for s in samples if s.role == r) for r in roles},
        pids=tuple(sorted(s.pid for s in samples)),
    )


@dataclass
class Report:
    """The figures of one soak, and why it failed (empty when it passed)."""

    seconds: float
    clients: int
    requests: int
    tokens: int
    errors: int
    error_samples: list[str]
    rss_after_warmup: dict[str, int]
    rss_end: dict[str, int]
    rss_growth: dict[str, float]
    fds_after_warmup: dict[str, int]
    fds_end: dict[str, int]
    threads_after_warmup: dict[str, int]
    threads_end: dict[str, int]
    failures: list[str]


def judge(snapshots: list[Snapshot], warmup: float) -> tuple[dict[str, Any], list[str]]:
    """Compare the window just after the warm-up with the end: memory, descriptors, threads, processes."""
    window = [s for s in snapshots if s.at >= warmup]
    if len(window) < 2 * EDGE_SAMPLES:
        return {}, [f"only {len(window)} samples after the warm-up; run longer"]
    first, last = window[:EDGE_SAMPLES], window[-EDGE_SAMPLES:]
    roles = sorted(set(first[0].rss) | set(last[-1].rss))
    figures: dict[str, Any] = {
        "rss_after_warmup": {r: int(statistics.median(s.rss.get(r, 0) for s in first)) for r in roles},
        "rss_end": {r: int(statistics.median(s.rss.get(r, 0) for s in last)) for r in roles},
        # Descriptors and threads come and go with connections: growth is the end's least above the
        # start's most, which a leak passes and a passing spike does not.
        "fds_after_warmup": {r: max(s.fds.get(r, 0) for s in first) for r in roles},
        "fds_end": {r: min(s.fds.get(r, 0) for s in last) for r in roles},
        "threads_after_warmup": {r: max(s.threads.get(r, 0) for s in first) for r in roles},
        "threads_end": {r: min(s.threads.get(r, 0) for s in last) for r in roles},
    }
    figures["rss_growth"] = {
        r: (figures["rss_end"][r] - base) / base if base else 0.0
        for r, base in figures["rss_after_warmup"].items()
    }
    failures = []
    for role, growth in figures["rss_growth"].items():
        if growth >= RSS_GROWTH_LIMIT:
            failures.append(f"{role} resident memory grew {growth:.1%} after the warm-up")
    for kind in ("fds", "threads"):
        for role in roles:
            start, end = figures[f"{kind}_after_warmup"][role], figures[f"{kind}_end"][role]
            if end > start:
                failures.append(f"{role} {kind} grew from {start} to {end}")
    pids = {s.pids for s in window}
    if len(pids) > 1:
        failures.append(
            f"the server's processes changed during the run (a runner restarted?): {sorted(pids)}"
        )
    return figures, failures


# -- the run ---------------------------------------------------------------------------------------------


def start_loaded_server(home: Path, ctx: int, threads: int | None) -> tuple[subprocess.Popen[bytes], str]:
    """`candor serve` on a free port; returns once it answers and the default model is loaded."""
    env = {"CANDOR_CTX": str(ctx), **({"CANDOR_THREADS": str(threads)} if threads else {})}
    try:
        proc, url = start_server(home, env=env, timeout=120)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    loaded = httpx.post(url + "/api/generate", json={"model": MODEL, "prompt": ""}, timeout=300)
    if loaded.status_code != 200:
        stop_server(proc)
        raise SystemExit(f"loading {MODEL} failed: {loaded.text}")
    return proc, url


def soak(
    *,
    seconds: float,
    clients: int = 8,
    warmup: float | None = None,
    max_tokens: int = 48,
    ctx: int = 2048,
    threads: int | None = None,
    interval: float = 1.0,
    progress: bool = False,
) -> Report:
    """Run the soak and return its figures (Report.failures is empty when it passed)."""
    warmup = min(60.0, seconds / 4) if warmup is None else warmup
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="candor-soak-") as home:
        proc, url = start_loaded_server(Path(home), ctx, threads)
        try:
            snapshots, ran = asyncio.run(
                _drive(proc.pid, url, seconds, clients, max_tokens, interval, tally, progress)
            )
        finally:
            stop_server(proc)
    figures, failures = judge(snapshots, warmup)
    if tally.errors:
        failures.insert(0, f"{len(tally.errors)} request errors, first: {tally.errors[0]}")
    if tally.requests == 0:
        failures.insert(0, "no request finished")
    empty: dict[str, Any] = {}
    return Report(
        seconds=round(ran, 1),
        clients=clients,
        requests=tally.requests,
        tokens=tally.tokens,
        errors=len(tally.errors),
        error_samples=tally.errors[:5],
        rss_after_warmup=figures.get("rss_after_warmup", empty),
        rss_end=figures.get("rss_end", empty),
        rss_growth={k: round(v, 4) for k, v in figures.get("rss_growth", empty).items()},
        fds_after_warmup=figures.get("fds_after_warmup", empty),
        fds_end=figures.get("fds_end", empty),
        threads_after_warmup=figures.get("threads_after_warmup", empty),
        threads_end=figures.get("threads_end", empty),
        failures=failures,
    )


async def _drive(
    server_pid: int,
    url: str,
    seconds: float,
    clients: int,
    max_tokens: int,
    interval: float,
    tally: Tally,
    progress: bool,
) -> tuple[list[Snapshot], float]:
    """Run the clients for `seconds`, sampling the server's processes; then hang them all up."""
    started = time.monotonic()
    tasks = [asyncio.create_task(client_loop(i, url, max_tokens, tally)) for i in range(clients)]
    snapshots: list[Snapshot] = []
    next_report = 60.0
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            snapshots.append(snapshot(server_pid, started))
            if progress and elapsed >= next_report:
                next_report += 60.0
                rss = sum(snapshots[-1].rss.values()) / 2**20
                print(
                    f"{elapsed / 60:5.1f} min: {tally.requests} requests, {tally.tokens} tokens, "
                    f"{len(tally.errors)} errors, RSS {rss:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(min(interval, max(0.0, seconds - elapsed)))
        snapshots.append(snapshot(server_pid, started))  # the end, with the clients still running
    finally:
        ran = time.monotonic() - started
        for task in tasks:  # requests in flight are hung up, not counted
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return snapshots, ran


def print_report(report: Report) -> None:
    mib = 2**20
    print(f"soak: {report.seconds:.0f} s, {report.clients} clients on {MODEL}")
    rate = report.tokens / report.seconds if report.seconds else 0.0
    print(f"  requests {report.requests}, tokens {report.tokens} ({rate:.1f}/s), errors {report.errors}")
    for role in report.rss_end:
        rss = f"RSS {report.rss_after_warmup[role] / mib:.1f} -> {report.rss_end[role] / mib:.1f} MiB"
        fds = f"fds {report.fds_after_warmup[role]} -> {report.fds_end[role]}"
        threads = f"threads {report.threads_after_warmup[role]} -> {report.threads_end[role]}"
        print(f"  {role}: {rss} ({report.rss_growth[role]:+.1%}), {fds}, {threads}")
    for failure in report.failures:
        print(f"  FAIL: {failure}")
    print("  PASS" if not report.failures else "  FAILED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent streaming clients (default 8)")
    parser.add_argument(
        "--warmup", type=float, help="seconds before memory is measured (default: a quarter, at most 60)"
    )
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per request (default 48)")
    parser.add_argument("--ctx", type=int, default=2048, help="CANDOR_CTX of the server (default 2048)")
    parser.add_argument("--threads", type=int, help="CANDOR_THREADS of the server (default: candor's)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    report = soak(
        seconds=args.minutes * 60,
        clients=args.clients,
        warmup=args.warmup,
        max_tokens=args.max_tokens,
        ctx=args.ctx,
        threads=args.threads,
        interval=args.interval,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        print_report(report)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
