#!/usr/bin/env python3
"""Fuzz `candor serve` from its own /openapi.json with schemathesis: no 5xx, no hang, no runner death.

Starts a real `candor serve` on a free loopback port (a private CANDOR_HOME, the embedded default model,
Hugging Face pointed at a closed local port so /api/pull never leaves the machine), or fuzzes the server
at --url. For every operation in the schema it draws requests that fit the schema (positive) and that do
not (negative), steers half of them at the real model so generation runs, and bounds how much each asks
for (at most --tokens tokens, a context of at most 2048) so that a run measures robustness, not decode
speed. It fails (exit status 1) on any 5xx, on a request unanswered within --timeout seconds, on a
runner that died, or on a server that stopped answering.

    python scripts/fuzz_api.py                        # 200 requests per operation and mode
    python scripts/fuzz_api.py --max-examples 10 --json
    python scripts/fuzz_api.py --url http://127.0.0.1:11434
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]
from live_server import free_port, start_server, stop_server  # noqa: E402  (the tests' server helpers)

MODEL = "gemma-3-270m:Q4_K_M"
GENERATES = (
    "/api/generate",
    "/api/chat",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/responses",
)
# Routes that may name the real model: everything but deleting it, which would end the run's generation.
REAL_MODEL_ROUTES = (
    *GENERATES,
    "/api/embed",
    "/api/embeddings",
    "/v1/embeddings",
    "/api/show",
    "/api/create",
    "/v1/messages/count_tokens",
    "/tokenize",
    "/apply-template",
)
MAX_CTX = 2048


@dataclass
class Report:
    """What one fuzz run saw."""

    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)  # "POST /api/chat 400" -> count
    failures: list[dict[str, Any]] = field(default_factory=list)
    runner_crashes: float = 0.0
    server_alive: bool = True
    slowest: float = 0.0

    @property
    def ok(self) -> bool:
        """No 5xx, no hang, no runner death, the server still answering."""
        return not self.failures and self.runner_crashes == 0 and self.server_alive


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """A fresh `candor serve` on loopback with a private store; stopped (and its runners) at the end."""
    with tempfile.TemporaryDirectory(prefix="candor-fuzz-") as home:
        env = {
            "HF_HOME": str(Path(home) / "hf"),
            "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens: pulls fail fast, offline
        }
        try:
            proc, url = start_server(Path(home) / "candor", env=env)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        try:
            yield url
        finally:
            stop_server(proc)


def metric(url: str, name: str) -> float:
    """One counter from /metrics."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def steer(path: str, body: Any, rng: random.Random, tokens: int) -> Any:
    """Point half the requests at the real model, and bound how many tokens and how much context any asks
    for (the hand-written tests in tests/hardening/ cover out-of-range numbers on their own)."""
    if not isinstance(body, dict):
        return body
    if path in REAL_MODEL_ROUTES and rng.random() < 0.5:
        body["model"] = MODEL
    # A drawn keep_alive of 0 or a few seconds would reload the model for each request: all load time.
    body.pop("keep_alive", None)
    if path not in GENERATES:
        return body
    if body.get("model") == MODEL and rng.random() < 0.5:
        # Drawn at random, a role or a tool_choice is almost never valid: make some requests plain enough
        # to reach the model, keeping the other drawn fields (sampling values, stops, logprobs, stream).
        for key in ("tools", "tool_choice", "response_format", "format", "grammar", "images", "think"):
            body.pop(key, None)
        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = [
                {**m, "role": "user", "tool_calls": None, "images": None} if isinstance(m, dict) else m
                for m in messages
            ]
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(key)
        if value is None or (isinstance(value, (int, float)) and value > tokens):  # 3e5 is an int to pydantic
            body[key] = tokens
    options = body.get("options")
    if path.startswith("/api/"):
        if options is None:
            options = body["options"] = {}
        if isinstance(options, dict):
            value = options.get("num_predict")
            if not isinstance(value, (int, float)) or value > tokens or value in (-1, -2):
                options["num_predict"] = tokens
            ctx = options.get("num_ctx")
            if isinstance(ctx, int) and ctx > MAX_CTX:
                options["num_ctx"] = MAX_CTX
    return body


def fuzz(
    url: str, *, max_examples: int, timeout: float, tokens: int, seed: int, only: str | None = None
) -> Report:
    """Run every operation of the server's schema in both generation modes; return what happened."""
    report = Report()
    rng = random.Random(seed)
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    httpx.post(url + "/api/generate", json={"model": MODEL}, timeout=300)  # load once, outside the clock
    crashes_before = metric(url, "candor_runner_crashes_total")
    session = requests.Session()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if only is not None and only not in operation.path:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def attempt(case: Any) -> None:
                case.body = steer(case.path, case.body, rng, tokens)
                label = f"{case.method} {case.path}"
                begun = time.monotonic()
                try:
                    response = case.call(base_url=url, session=session, timeout=timeout)
                except requests.Timeout:
                    report.failures.append(
                        {"request": label, "problem": f"no answer in {timeout} s", "body": _clip(case.body)}
                    )
                    return
                except requests.ConnectionError as exc:
                    report.failures.append({"request": label, "problem": f"connection failed: {exc}"})
                    return
                finally:
                    report.requests += 1
                    report.slowest = max(report.slowest, time.monotonic() - begun)
                report.statuses[f"{label} {response.status_code}"] += 1
                if response.status_code >= 500:
                    report.failures.append(
                        {
                            "request": label,
                            "status": response.status_code,
                            "body": _clip(case.body),
                            "answer": response.text[:300],
                        }
                    )

            try:
                attempt()
            except Unsatisfiable:
                report.statuses[f"{operation.label} (no {mode.value} cases)"] += 0  # nothing invalid to draw
    report.seconds = time.monotonic() - started
    try:
        report.server_alive = httpx.get(url + "/", timeout=10).status_code == 200
        report.runner_crashes = metric(url, "candor_runner_crashes_total") - crashes_before
    except httpx.HTTPError:
        report.server_alive = False
    return report


def _clip(body: Any) -> str:
    try:
        text = json.dumps(body)
    except (TypeError, ValueError):
        text = repr(body)
    return text[:300]


def print_report(report: Report) -> None:
    """A table of statuses per operation, then the verdict."""
    print(f"{report.requests} requests in {report.seconds:.1f} s (slowest {report.slowest:.2f} s)")
    for key, count in sorted(report.statuses.items()):
        print(f"  {key:<45} {count:>6}")
    print(f"runner crashes: {report.runner_crashes:.0f}; server answering: {report.server_alive}")
    for failure in report.failures[:20]:
        print("FAIL", json.dumps(failure))
    print("OK" if report.ok else f"FAILED: {len(report.failures)} failing request(s)")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, fuzz, print (or --json) the figures; exit 1 on any failure."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="fuzz this running server instead of starting one")
    parser.add_argument("--max-examples", type=int, default=200, help="requests per operation and mode")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take")
    parser.add_argument("--tokens", type=int, default=8, help="most tokens any generation may ask for")
    parser.add_argument("--seed", type=int, default=0, help="steering seed (draws are derandomized)")
    parser.add_argument("--only", help="fuzz only the operations whose path contains this text")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(serve())
        report = fuzz(
            url,
            max_examples=args.max_examples,
            timeout=args.timeout,
            tokens=args.tokens,
            seed=args.seed,
            only=args.only,
        )
    if args.json:
        print(json.dumps({**asdict(report), "statuses": dict(report.statuses), "ok": report.ok}))
    else:
        print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
