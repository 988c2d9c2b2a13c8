"""The child side of the CPU self-test: run the self-test model through llama.cpp's extra CPU buffer types,
each trial in a forked process of its own, and print what survived as one JSON object.

Kept apart from cpu_selftest.py so that `python -m` runs a module the package itself never imports. This
process loads llama.cpp but runs nothing in it (no thread starts before a fork); each trial is a fork that
loads the model, reads a prompt batch and decodes a few tokens. A trial that dies by a signal names the
fault; the search then tries each extra buffer type alone to find which one it is.

    python -m candor.engine.cpu_selftest_child [--threads N]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import select
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp

from candor.config import Settings
from candor.engine.build_info import build_info, extra_buffer_types
from candor.engine.native import ensure_backend
from candor.engine.selftest_model import MATRICES, TYPE_NAMES, VOCAB, write_selftest_model
from candor.plan.weights import repack_types

PROMPT_TOKENS = 8  # AMX's tile kernels only take batches of two or more tokens
DECODE_STEPS = 3
TRIAL_TIMEOUT = 30.0  # seconds; a trial that hangs counts as a fault
# Types each extra buffer type takes a matrix of (their supports_op); overriding a tensor to a buffer type
# that rejects it aborts the load, so a type not listed here is only tested beside the others.
AMX_TYPES = frozenset({"Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"})
KLEIDIAI_TYPES = frozenset({"Q4_0", "Q8_0"})
_BUFFER_LINE = re.compile(r"^\S*:\s*(\S+) model buffer size =\s*([\d.]+) MiB")


@dataclass
class Trial:
    """One load-and-decode run: which buffer types it allowed, how far it got, and how it ended."""

    name: str  # "all", "none", or the one extra buffer type it tested alone
    ok: bool = False
    stage: str = "start"  # the last stage reached: start, loaded, decoded
    signal: str = ""  # the signal that killed it, if one did
    detail: str = ""
    buffers: dict[str, float] = field(default_factory=dict)  # model buffer -> MiB, from llama.cpp's log
    seconds: float = 0.0


class _BuftOverride(ctypes.Structure):
    # struct llama_model_tensor_buft_override (llama.h); llama-cpp-python leaves the field untyped
    _fields_ = (("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p))


def _types_taken_by(buft: str) -> frozenset[str]:
    if buft == "AMX":
        return AMX_TYPES
    if buft == "KLEIDIAI":
        return KLEIDIAI_TYPES
    if buft == "CPU_REPACK":
        return frozenset(repack_types(build_info().cpu_features))
    return frozenset()


def _exercise(path: Path, extra: bool, only: tuple[str, int] | None, threads: int, report: int) -> None:
    """In the forked trial: load, say which buffers hold weights, read a prompt, decode; exit 0."""
    sink = ensure_backend()
    mark = sink.mark()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    no_devices = (ctypes.c_void_p * 1)()  # an empty device list: the CPU only, even in a GPU build
    params.devices = ctypes.cast(no_devices, ctypes.c_void_p)
    params.use_extra_bufts = extra
    overrides = None
    if only is not None:
        name, buft = only
        taken = _types_taken_by(name)
        chosen = [t for t, (kind, _, _) in MATRICES.items() if TYPE_NAMES[kind] in taken]
        overrides = (_BuftOverride * (len(chosen) + 1))()
        for slot, tensor in zip(overrides, chosen, strict=False):
            slot.pattern = ("^" + re.escape(tensor) + "$").encode()
            slot.buft = buft
        params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise RuntimeError("; ".join(sink.errors_since(mark)[-2:]) or "the model did not load")
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 64
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("; ".join(sink.errors_since(mark)[-2:]) or "no context")
    buffers: dict[str, float] = {}
    for line in sink.since(mark):
        found = _BUFFER_LINE.match(line.strip())
        if found:
            buffers[found.group(1)] = buffers.get(found.group(1), 0.0) + float(found.group(2))
    os.write(report, (json.dumps({"stage": "loaded", "buffers": buffers}) + "\n").encode())
    fault = Settings.from_env().cpu_selftest_fault
    if fault and buffers.get(fault, 0.0) > 0:
        os.kill(os.getpid(), signal.SIGILL)  # the test hook: as if this buffer type's kernels were illegal
    batch = llama_cpp.llama_batch_init(PROMPT_TOKENS, 0, 1)
    tokens = list(range(3, 3 + PROMPT_TOKENS))
    for step in range(1 + DECODE_STEPS):
        feed = tokens if step == 0 else [3 + (step * 37) % (VOCAB - 3)]
        start = 0 if step == 0 else PROMPT_TOKENS + step - 1
        for i, token in enumerate(feed):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(feed) - 1
        batch.n_tokens = len(feed)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError(f"llama_decode failed at step {step}")
    os.write(report, (json.dumps({"stage": "decoded"}) + "\n").encode())


def run_trial(name: str, path: Path, *, extra: bool, only: tuple[str, int] | None, threads: int) -> Trial:
    """Run one trial in a forked process and report how it ended."""
    trial, started = Trial(name), time.monotonic()
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the trial: nothing here returns
        os.close(read_end)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash here is expected: no core file
        try:
            _exercise(path, extra, only, threads, write_end)
        except BaseException as exc:
            os.write(write_end, (json.dumps({"error": str(exc)}) + "\n").encode())
            os._exit(3)
        os._exit(0)
    os.close(write_end)
    output, deadline = b"", started + TRIAL_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([read_end], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            trial.detail = f"no answer within {TRIAL_TIMEOUT:.0f} s"
            break
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        output += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    for line in output.decode(errors="replace").splitlines():
        message: dict[str, Any] = json.loads(line)
        trial.stage = message.get("stage", trial.stage)
        trial.buffers = message.get("buffers", trial.buffers)
        trial.detail = message.get("error", trial.detail)
    if os.WIFSIGNALED(status):
        trial.signal = signal.Signals(os.WTERMSIG(status)).name
    trial.ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and trial.stage == "decoded"
    trial.seconds = round(time.monotonic() - started, 3)
    return trial


def search(path: Path, threads: int) -> dict[str, Any]:
    """The whole self-test: every extra buffer type together, then (if that dies, twice) each alone."""
    extras = extra_buffer_types()
    trials: list[Trial] = []

    def trial(name: str, *, extra: bool, only: tuple[str, int] | None = None) -> Trial:
        done = run_trial(name, path, extra=extra, only=only, threads=threads)
        trials.append(done)
        return done

    def twice(name: str, *, extra: bool, only: tuple[str, int] | None = None) -> Trial:
        first = trial(name, extra=extra, only=only)
        # A death is run again before it counts: the second run's outcome is the verdict
        return first if first.ok or not first.signal else trial(name, extra=extra, only=only)

    together = twice("all", extra=True)
    if not together.ok and not together.signal:  # refused or hung up, not killed: nothing was learnt
        return {"extra_buffer_types": [n for n, _ in extras], "faulty": {}, "error": together.detail}
    faulty: dict[str, str] = {}
    untested: list[str] = []
    for name, buft in extras:
        if together.ok and together.buffers.get(name, 0.0) > 0:
            continue  # it held weights in the run that passed
        if not _types_taken_by(name):
            untested.append(name)
            continue
        alone = twice(name, extra=False, only=(name, buft))
        if alone.signal and alone.stage != "start":  # it loaded, then died computing with them
            when = "computing with its weights" if alone.stage == "loaded" else "after the decode"
            faulty[name] = f"killed by {alone.signal} {when}"
        elif not alone.ok:
            untested.append(name)
    if not together.ok and not faulty:
        faulty["all"] = together.signal or together.detail or "failed"
    fallback = trial("none", extra=False) if faulty else None
    return {
        "extra_buffer_types": [name for name, _ in extras],
        "faulty": faulty,
        "untested": untested,
        "fallback_ok": None if fallback is None else fallback.ok,
        "trials": [asdict(t) for t in trials],
    }


def main(argv: list[str]) -> int:
    """Run the self-test and print its report as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m candor.engine.cpu_selftest_child")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads in each trial")
    args = parser.parse_args(argv)
    ensure_backend()
    with tempfile.TemporaryDirectory(prefix="candor-cpu-selftest-") as tmp:
        path = write_selftest_model(Path(tmp) / "selftest.gguf")
        report = search(path, max(1, args.threads))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
