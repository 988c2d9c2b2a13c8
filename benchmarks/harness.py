"""What the scripts in benchmarks/ share: candor's speed measured through its library, llama.cpp's own
tools run as subprocesses, and how a series of figures is printed.

The scripts run as `python benchmarks/NAME.py`, which puts this folder on sys.path.
"""

from __future__ import annotations

import random
import socket
import statistics
import subprocess
import time
from typing import TYPE_CHECKING

import httpx

# `candor bench` measures with the same functions: one definition of each figure for both.
from candor.cli.bench import concurrent_decode_rate, decode_rate, prefill_rate
from candor.cli.llama_tools import (
    find_llama_tools,
    held_in_ram,
    llama_batched_bench,
    llama_bench,
    tools_build,
)
from candor.diagnostics import candor_build

if TYPE_CHECKING:
    from candor.model import Model

__all__ = [
    "candor_build",
    "concurrent_decode_rate",
    "decode_rate",
    "decode_rate_at_depth",
    "document",
    "find_llama_tools",
    "free_port",
    "held_in_ram",
    "llama_batched_bench",
    "llama_bench",
    "prefill_rate",
    "spread",
    "tools_build",
    "wait_ready",
]


def spread(values: list[float]) -> str:
    """median [min..max]."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server; kill it if it lingers."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(url: str, path: str, timeout: float = 180) -> None:
    """Return once `url + path` answers 200; exit the script if it does not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not start")


# words that documentation is made of, by kind; split once per document() call
_WORDS = {
    "noun": "buffer cache index record schema table column cursor session handle token queue worker thread "
    "socket request response header payload manifest archive snapshot checkpoint journal segment block "
    "page frame slot batch stream channel event listener callback plugin module package config "
    "setting profile account user group role policy permission quota limit timeout retry backoff "
    "endpoint route proxy gateway cluster node replica shard partition lease lock barrier",
    "verb": "returns reads writes flushes validates parses encodes decodes allocates releases locks unlocks "
    "schedules cancels retries resolves registers updates removes copies merges splits compresses "
    "verifies signs loads stores caches evicts renames opens closes",
    "adjective": "current pending stale active idle remote local default optional required shared private "
    "temporary persistent cached compressed encrypted partial complete empty full primary secondary "
    "readonly mutable nested ordered sorted unique",
}
_TAILS = (
    "before the next call returns",
    "when the caller holds the lock",
    "unless the timeout has expired",
    "and logs a warning on failure",
    "so that later reads see the change",
    "if the value is not already set",
    "in the order the requests arrived",
    "without blocking the event loop",
)


def document(seed: int, words: int) -> str:
    """Deterministic documentation-like English of about `words` words; a different seed, different text.

    Real prose-shaped tokens for long prompts (a repeated token or random ids behave unlike a real one)."""
    rng = random.Random(seed)
    nouns, verbs, adjectives = (_WORDS[kind].split() for kind in ("noun", "verb", "adjective"))
    title = f"{rng.choice(adjectives)}_{rng.choice(nouns)}"
    out = [f"# The {title} library, reference manual (edition {seed})\n"]
    count = 8
    section = 0
    while count < words:
        section += 1
        mod, noun, other = rng.choice(nouns), rng.choice(nouns), rng.choice(nouns)
        name = f"{rng.choice(verbs).removesuffix('s')}_{noun}"
        out.append(f"\n## {section}. {title}.{mod}.{name}({other}, timeout={rng.randint(1, 600)})\n")
        for _ in range(rng.randint(3, 6)):
            sentence = (
                f"The {name} function {rng.choice(verbs)} the {rng.choice(adjectives)} "
                f"{rng.choice(nouns)} of each {rng.choice(nouns)} {rng.choice(_TAILS)}."
            )
            out.append(sentence + (" " if rng.random() < 0.7 else "\n"))
            count += len(sentence.split())
        if rng.random() < 0.3:
            state = rng.choice(adjectives)
            out.append(f"\n- Raises `{noun.capitalize()}Error` when the {other} is {state}.\n")
            count += 8
    return "".join(out)


def decode_rate_at_depth(model: Model, depth_tokens: list[int], n: int, seed: int) -> float:
    """Decode n tokens after a prompt of `depth_tokens` (read first, not timed); tokens/s of those n steps.

    The prompt's KV cache is reused when the previous call read the same prompt (only decode is timed)."""
    done = model.generate(depth_tokens, stream=False, max_tokens=n + 1, ignore_eos=True, seed=seed)
    return done.timings.decode_tokens_per_second(done.usage)
