"""The child side of probe_load and ProbeSession: load a model and say whether llama.cpp accepted it.

Kept apart from probe.py so that `python -m` runs a module the package itself never imports.

    python -m candor.engine.probe_child [--max-memory BYTES] [--decode] MODEL.gguf
        exit 0: loads; 3: refused (reason on stderr)
    python -m candor.engine.probe_child --serve [--max-memory BYTES] [--decode]
        a path per line on stdin, a JSON line {"ok", "reason"} per path on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

from candor.engine.context import ContextConfig, NativeContext
from candor.engine.generate import SequenceRunner
from candor.engine.native_model import NativeModel
from candor.engine.probe import REFUSED
from candor.errors import CandorError
from candor.types import SamplingParams

DECODE_CTX = 64  # enough for a short prompt and two tokens: the decode path, not the model's quality


def load(path: Path, *, decode: bool) -> None:
    """Load the weights (memory-mapped, CPU) and, with `decode`, run a prompt and two greedy tokens."""
    model = NativeModel(path, gpu_layers=0)
    try:
        if not decode:
            return
        context = NativeContext(
            model, ContextConfig(n_ctx=DECODE_CTX, n_batch=DECODE_CTX, n_threads=1, n_outputs_max=1)
        )
        try:
            prompt = model.tokenize("hello world", add_special=True, parse_special=False)
            prompt = prompt[: DECODE_CTX // 2] or [max(model.bos, 0)]
            for _ in SequenceRunner(context).generate(prompt, SamplingParams(max_tokens=2, temperature=0)):
                pass
        finally:
            context.close()
    finally:
        model.close()


def _serve(decode: bool) -> int:
    # Answers go to a private copy of stdout; fd 1 becomes stderr, so nothing native can corrupt them.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            load(Path(path), decode=decode)
            answer = {"ok": True, "reason": ""}
        except CandorError as exc:
            answer = {"ok": False, "reason": str(exc)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0


def main(argv: list[str]) -> int:
    """Probe one file (exit status) or, with --serve, each path read from stdin (JSON lines)."""
    parser = argparse.ArgumentParser(prog="python -m candor.engine.probe_child")
    parser.add_argument("--max-memory", type=int, default=0, help="address-space cap in bytes (0: none)")
    parser.add_argument("--decode", action="store_true", help="also decode a prompt and two tokens")
    parser.add_argument("--serve", action="store_true", help="probe each path read from stdin")
    parser.add_argument("model", nargs="?")
    args = parser.parse_args(argv)
    if args.max_memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (args.max_memory, args.max_memory))
    if args.serve:
        return _serve(args.decode)
    if not args.model:
        parser.error("give a model path, or --serve")
    try:
        load(Path(args.model), decode=args.decode)
    except CandorError as exc:
        print(exc, file=sys.stderr)
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
