"""Fuzz GGUF headers by hand: 10,000+ mutated copies of the tiny fixture model, each through candor's
preflight and, when it passes, through llama.cpp (load, then decode two tokens).

Both run in child processes under an address-space cap (resource.setrlimit) with a timeout per input,
so a crash, a runaway allocation or a hang is counted rather than suffered. Prints a summary and exits
non-zero on any crash or hang of candor's checks, any input candor passed that crashed or hung llama.cpp,
any untyped error, or any harmless mutation (a new name, an extra key) that did not load.

    python scripts/fuzz_gguf.py                      # 10,000 inputs, seed 1
    python scripts/fuzz_gguf.py --inputs 50000 --seed 7 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "hardening")]

from gguf_layout import Base  # noqa: E402  (after the path set-up above)
from gguf_mutants import (  # noqa: E402
    INTERESTING,
    STRINGS,
    Mutant,
    drop_key,
    extra_key,
    flip_bytes,
    rename,
    set_field,
    set_float,
    set_number,
    set_string,
    transplant,
    truncate,
)

from candor.engine.probe import ProbeSession  # noqa: E402

HARMLESS_SHARE = 0.05  # of the inputs: changes that must still load
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 -_.äöü漢字🙂"


def _value(rng: random.Random) -> int:
    return rng.choice(INTERESTING) if rng.random() < 0.7 else rng.getrandbits(rng.choice((8, 16, 32, 64)))


def _float(rng: random.Random) -> float:
    specials = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-38, 3.4e38, -1e-5)
    return rng.choice(specials) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)


def _string(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(STRINGS)
    return "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(0, 40)))


MUTATORS: dict[str, Callable[[Base, random.Random], Mutant]] = {
    "flip": lambda b, r: flip_bytes(
        b, [r.randrange(1 << 20) for _ in range(r.randint(1, 4))], [r.randrange(256) for _ in range(4)]
    ),
    "field": lambda b, r: set_field(b, r.randrange(10_000), _value(r)),
    "truncate": lambda b, r: truncate(b, r.randrange(1 << 20)),
    "number": lambda b, r: set_number(b, r.randrange(100), _value(r)),
    "float": lambda b, r: set_float(b, r.randrange(100), _float(r)),
    "string": lambda b, r: set_string(b, r.randrange(100), _string(r)),
    "drop": lambda b, r: drop_key(b, r.randrange(100)),
    "transplant": lambda b, r: transplant(b, r.randrange(1000)),
}


def mutant(base: Base, rng: random.Random) -> Mutant:
    """One input: mostly damage, sometimes a harmless change that must still load."""
    if rng.random() < HARMLESS_SHARE:
        if rng.random() < 0.5:
            return rename(base, "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 200))))
        key = "".join(rng.choice("abcdefghij_.0123") for _ in range(rng.randint(1, 30)))
        return extra_key(base, key, rng.getrandbits(64) if rng.random() < 0.5 else key * rng.randint(0, 50))
    return MUTATORS[rng.choice(sorted(MUTATORS))](base, rng)


# --- the preflight worker: a child under the memory cap, one path per line ------------------------


def worker(max_memory: int) -> int:
    """Run candor's preflight on each path read from stdin; answer a JSON line per path."""
    resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    from candor.errors import CandorError
    from candor.preflight import preflight

    for line in sys.stdin:
        try:
            preflight(Path(line.rstrip("\n")))
            answer = {"verdict": "passed"}
        except CandorError as exc:
            answer = {"verdict": "refused", "error": type(exc).__name__}
        except Exception as exc:  # not a typed error: a bug in candor's checks
            answer = {"verdict": "untyped", "error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps(answer), flush=True)
    return 0


class Checker:
    """The parent's handle on the preflight worker; restarts it when it dies or hangs."""

    def __init__(self, max_memory: int, timeout: float) -> None:
        self.command = [sys.executable, __file__, "--worker", "--max-memory", str(max_memory)]
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self, path: Path) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(os.fsencode(path) + b"\n")
        proc.stdin.flush()
        data, deadline = b"", time.monotonic() + self.timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                self.close()
                return {"verdict": "hung"}
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                status = proc.wait()
                self.proc = None
                return {"verdict": "crashed", "error": f"exit status {status}"}
            data += chunk
        return dict(json.loads(data))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- the run ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tally: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    findings: list[dict[str, str]] = []
    folder = Path(
        tempfile.mkdtemp(prefix="candor-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    base = Base.make(folder)
    path = folder / "mutant.gguf"
    checker = Checker(args.max_memory, args.timeout)
    started = time.monotonic()
    with ProbeSession(timeout=args.timeout, max_memory=args.max_memory, decode=True) as probes:
        for i in range(args.inputs):
            m = mutant(base, rng)
            path.write_bytes(m.data)
            tally["harmless" if m.harmless else "damaged"] += 1
            verdict = checker.check(path)
            outcome = verdict["verdict"]
            if outcome == "refused":
                refusals[verdict["error"]] += 1
                outcome = "refused by candor"
                if m.harmless:
                    outcome = "harmless refused by candor"
            elif outcome == "passed":
                result = probes.probe(path)
                if result.crashed:
                    outcome = "passed candor, crashed llama.cpp"
                elif result.timed_out:
                    outcome = "passed candor, hung llama.cpp"
                elif result.ok:
                    outcome = "ran in llama.cpp"
                else:
                    outcome = "harmless refused by llama.cpp" if m.harmless else "refused by llama.cpp"
                tally["reached llama.cpp"] += 1
            tally[outcome] += 1
            if outcome not in ("refused by candor", "ran in llama.cpp", "refused by llama.cpp"):
                keep = folder / f"finding-{len(findings)}.gguf"
                keep.write_bytes(m.data)
                findings.append({"input": str(i), "outcome": outcome, "how": m.how, "file": str(keep)})
                if outcome.startswith("passed candor"):
                    findings[-1]["reason"] = result.reason[-300:]
            if args.progress and (i + 1) % args.progress == 0:
                rate = (i + 1) / (time.monotonic() - started)
                print(f"{i + 1} inputs, {rate:.0f}/s, findings {len(findings)}", file=sys.stderr, flush=True)
        children = probes.started
    checker.close()
    seconds = time.monotonic() - started
    if not findings:  # nothing to look at: leave no 0.5 MB files behind in /dev/shm
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "inputs": args.inputs,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "inputs_per_second": round(args.inputs / seconds, 1),
        "memory_cap_bytes": args.max_memory,
        "timeout_seconds": args.timeout,
        "outcomes": dict(tally),
        "refused_by_candor_as": dict(refusals),
        "probe_children_started": children,
        "findings": findings,
        "folder": str(folder) if findings else None,
    }


BAD = ("crashed", "hung", "untyped", "passed candor, crashed llama.cpp", "passed candor, hung llama.cpp")
BAD += ("harmless refused by candor", "harmless refused by llama.cpp")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-memory", type=int, default=1 << 30, help="address-space cap per child, bytes")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per input before a hang")
    parser.add_argument("--progress", type=int, default=1000, help="report every N inputs (0: never)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.max_memory)
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad = sum(summary["outcomes"].get(k, 0) for k in BAD)
    harmless = summary["outcomes"].get("harmless", 0)
    print(
        f"\n{summary['inputs']} inputs in {summary['seconds']} s ({summary['inputs_per_second']}/s); "
        f"{summary['outcomes'].get('reached llama.cpp', 0)} passed candor's checks and reached llama.cpp; "
        f"{harmless} harmless mutations; {bad} findings",
        file=sys.stderr,
    )
    return 1 if bad or not harmless else 0


if __name__ == "__main__":
    sys.exit(main())
