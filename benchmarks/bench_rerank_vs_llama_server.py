#!/usr/bin/env python3
"""candor's /rerank against llama-server's on the same reranker file: every score must agree.

Starts llama.cpp's own llama-server (`--rerank`, one slot) and `candor serve` (the file imported into a
private CANDOR_HOME), sends each the same queries and documents on `/rerank`, and prints both rankings and
the largest difference between the two servers' scores for a document. Exits 1 when any document's
score differs by more than --tolerance (or one server left a document out).

Without --model it runs the tests' tiny reranker (tests/gguf_reranker.py) three times: declaring rank
pooling and formatted as llama.cpp does without a template (BOS query EOS SEP document EOS); through a
`tokenizer.chat_template.rerank`; and declaring no pooling type, as bge-reranker's GGUFs are written.

    python benchmarks/bench_rerank_vs_llama_server.py [--model bge-reranker-v2-m3.gguf] [--llama-tools DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from harness import find_llama_tools, free_port, stop, wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gguf_reranker import write_tiny_reranker  # the tests' fixture writer

TEMPLATE = "<s>query: {query}</s></s>document: {document}</s>"
QUERIES = ("hello the world", "and on", "naïve café: où est le monde?")
DOCUMENTS = (
    "hello",
    "world world world",
    "hello world",
    "hello the world and on",
    "the world is an island",
    "naïve café",
    "",
)


def start(cmd: list[str], url: str, ready: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server and return once `ready` answers 200."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, ready)
    except BaseException:
        stop(proc)
        raise
    return proc


def ranking(url: str, body: dict[str, Any]) -> list[tuple[int, float]]:
    """(index, relevance_score) from a /rerank answer, best first as the server sent them."""
    answer = httpx.post(url + "/rerank", json=body, timeout=300)
    answer.raise_for_status()
    return [(r["index"], r["relevance_score"]) for r in answer.json()["results"]]


def compare(model: Path, tools: Path, threads: int) -> float:
    """Serve `model` from both servers, rank every query with each; the largest score difference."""
    with tempfile.TemporaryDirectory(prefix="candor-rerank-bench-") as tmp:
        home = Path(tmp) / "candor"
        env = {**os.environ, "CANDOR_HOME": str(home), "CANDOR_THREADS": str(threads)}
        imported = subprocess.run(
            [sys.executable, "-m", "candor", "import", str(model), "--name", "reranker:bench"],
            env=env,
            capture_output=True,
            text=True,
        )
        if imported.returncode != 0:
            raise SystemExit(f"candor import failed: {imported.stderr.strip()}")
        llama_url, candor_url = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
        llama_cmd = [
            str(tools / "llama-server"), "-m", str(model), "--rerank", "-np", "1", "-t", str(threads),
            "--host", "127.0.0.1", "--port", llama_url.rsplit(":", 1)[1],
        ]  # fmt: skip
        candor_cmd = [sys.executable, "-m", "candor", "serve", "--port", candor_url.rsplit(":", 1)[1]]
        llama = start(llama_cmd, llama_url, "/health")
        try:
            served = start(candor_cmd, candor_url, "/", env)
            try:
                worst = 0.0
                for query in QUERIES:
                    body = {"query": query, "documents": list(DOCUMENTS)}
                    theirs = ranking(llama_url, body)
                    ours = ranking(candor_url, {**body, "model": "reranker:bench"})
                    mine = dict(ours)
                    difference = max(abs(s - mine.get(i, float("inf"))) for i, s in theirs)
                    worst = max(worst, difference)
                    print(f"  query {query!r}: max |candor - llama-server| = {difference:.3g}")
                    # scores that agree within the tolerance may still swap near-ties: shown, not failed
                    for (i, s), (j, t) in zip(theirs, ours, strict=True):
                        flag = "" if i == j else "   <- order differs"
                        print(f"    llama-server #{i} {s:+.6f}   candor #{j} {t:+.6f}{flag}")
            finally:
                stop(served)
        finally:
            stop(llama)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a reranker GGUF (default: the tests' tiny reranker)")
    parser.add_argument("--llama-tools", help="the folder holding llama-server")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    tools = find_llama_tools(args.llama_tools)
    if tools is None or not (tools / "llama-server").is_file():
        raise SystemExit("need llama.cpp's llama-server at llama-cpp-python's commit (--llama-tools DIR)")
    with tempfile.TemporaryDirectory(prefix="tiny-reranker-") as tmp:
        if args.model is not None:
            models = {args.model.name: args.model}
        else:
            models = {
                "tiny reranker, no template": write_tiny_reranker(Path(tmp) / "tiny-reranker.gguf"),
                f"tiny reranker, rerank template {TEMPLATE!r}": write_tiny_reranker(
                    Path(tmp) / "tiny-reranker-templated.gguf", rerank_template=TEMPLATE
                ),
                "tiny reranker, no pooling type declared": write_tiny_reranker(
                    Path(tmp) / "tiny-reranker-undeclared.gguf", declare_rank=False
                ),
            }
        worst = 0.0
        for label, path in models.items():
            print(f"{label} ({path.name}), {args.threads} threads")
            worst = max(worst, compare(path, tools, args.threads))
    print(f"max |candor - llama-server| over every score: {worst:.3g} (tolerance {args.tolerance:g})")
    if not worst <= args.tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
