"""Measurements shared by `candor bench` and benchmarks/: candor's speed and llama.cpp's own tools'."""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

import llama_cpp

from candor import config
from candor.engine.build_info import build_info
from candor.errors import CandorError
from candor.model import Model
from candor.scheduler import Scheduler
from candor.scheduler.process import runner_environment
from candor.types import SamplingParams


def find_llama_tools(explicit: str | None = None) -> Path | None:
    """The folder holding llama-bench built at llama-cpp-python's llama.cpp commit, if there is one."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit) / "llama-bench")
    if found := shutil.which("llama-bench"):
        candidates.append(Path(found))
    cache = str(config.read("CANDOR_REF_DIR"))
    # the default build first, then those built with other CMAKE_ARGS (a suffix per set of flags)
    for suffix in ("", "-*"):
        pattern = f"{cache}/llama-cpp-python-{llama_cpp.__version__}{suffix}/build/bin/llama-bench"
        candidates += [Path(p) for p in sorted(glob.glob(pattern))]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.parent
    return None


def tools_build(tools: Path) -> str:
    """Which llama.cpp build a folder of tools is, from the CMake cache beside it: compiled for the
    building machine (GGML_NATIVE, AMX kernels included where its CPU has AMX) or for the flags named."""
    cache = tools.parent / "CMakeCache.txt"
    try:
        text = cache.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"llama.cpp tools in {tools} (build flags unknown: no {cache.name} beside them)"
    on = {m.group(1) for m in re.finditer(r"^GGML_(\w+):BOOL=(?:ON|1|TRUE)$", text, re.MULTILINE)}
    if "NATIVE" in on:
        return f"llama.cpp tools in {tools} (GGML_NATIVE: every feature of the CPU that built them, AMX too)"
    flags = sorted(f for f in on if f.startswith(("AVX", "AMX", "FMA", "F16C", "BMI2")))
    amx = "with AMX" if "AMX_INT8" in on else "without AMX"
    return f"llama.cpp tools in {tools} (GGML_NATIVE=OFF, {' '.join(flags)}: {amx})"


def candor_build() -> str:
    """Which llama.cpp candor runs on, in the same terms as tools_build."""
    info = build_info()
    amx = "with AMX kernels" if "AMX_INT8" in info.cpu_features else "without AMX"
    return f"candor on llama-cpp-python {info.llama_cpp_python} (llama.cpp {info.llama_cpp_commit}; {amx})"


class ToolCrashed(CandorError):
    """A llama.cpp tool died by a signal (its build's kernels on this CPU)."""


def _run_tool(cmd: list[str], env: dict[str, str] | None) -> str:
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ToolCrashed(
            f"{Path(cmd[0]).name} died by {name}: this build's kernels do not run on this CPU (an AMX build "
            "on a machine whose AMX crashes?); run it with its extra buffer types off, or build it without "
            "AMX (docs/install.md)"
        )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)
    return done.stdout


def held_in_ram(cmd: list[str], in_ram: bool) -> tuple[list[str], dict[str, str] | None]:
    """A llama.cpp tool's command and environment: as upstream runs by default (weights mapped from the
    file), or holding the weights as a candor runner does (read into memory, glibc asked for huge pages)."""
    if not in_ram:
        return cmd, None
    return [*cmd, "--load-mode", "none"], runner_environment()


def llama_bench(
    tools: Path,
    model: Path,
    threads: int,
    *,
    prompt: int,
    gen: int,
    in_ram: bool = False,
    extra_buffers: bool = True,
) -> float:
    """One llama-bench measurement (it warms up first); tokens/s. Without `extra_buffers` it holds no
    weight in an extra CPU buffer type (`--repack 0`), as candor loads where the CPU self-test failed."""
    cmd = [
        str(tools / "llama-bench"),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-p",
        str(prompt),
        "-n",
        str(gen),
        "-r",
        "1",
        "-o",
        "json",
        *([] if extra_buffers else ["--repack", "0"]),
    ]
    cmd, env = held_in_ram(cmd, in_ram)
    return float(json.loads(_run_tool(cmd, env))[0]["avg_ts"])


def llama_batched_bench(
    tools: Path,
    model: Path,
    threads: int,
    *,
    streams: int,
    prompt: int,
    gen: int,
    in_ram: bool = False,
    extra_buffers: bool = True,
) -> float:
    """llama-batched-bench's generation tokens/s for `streams` sequences (it samples nothing)."""
    cmd = [
        str(tools / "llama-batched-bench"),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-c",
        str(streams * (prompt + gen) + 512),
        "-npp",
        str(prompt),
        "-ntg",
        str(gen),
        "-npl",
        str(streams),
        "-kvu",
        "--output-format",
        "jsonl",
        *([] if extra_buffers else ["--no-repack"]),
    ]
    cmd, env = held_in_ram(cmd, in_ram)
    out = _run_tool(cmd, env)
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    return float(json.loads(line)["speed_tg"])


def decode_rate(model: Model, n: int, seed: int) -> float:
    """Decode n tokens from a one-token prompt with the default sampler chain; tokens/s after the first."""
    prompt = model.tokenize("", add_special=True) or [1000]
    done = model.generate(prompt, stream=False, max_tokens=n, ignore_eos=True, seed=seed)
    return done.timings.decode_tokens_per_second(done.usage)


def prefill_rate(model: Model, n: int, rng: random.Random) -> float:
    """Evaluate an n-token prompt of random tokens (as llama-bench does); prompt tokens/s."""
    vocab = model.card.vocab_size or 32000
    prompt = [rng.randrange(1000, vocab - 1) for _ in range(n)]  # fresh tokens: no prefix to reuse
    done = model.generate(prompt, stream=False, max_tokens=1, ignore_eos=True)
    return done.timings.prompt_tokens_per_second(done.usage)


def concurrent_decode_rate(
    sched: Scheduler,
    model: str | None,
    *,
    streams: int,
    prompt: int,
    gen: int,
    rng: random.Random,
    vocab: int,
) -> tuple[float, float]:
    """Aggregate decode t/s of `streams` concurrent requests through the scheduler, and median TTFT (s)."""
    results: list[tuple[int, float, float]] = []
    lock = threading.Lock()
    prompts = [[rng.randrange(1000, vocab - 1) for _ in range(prompt)] for _ in range(streams)]

    def client(index: int) -> None:
        params = SamplingParams(max_tokens=gen, ignore_eos=True, seed=index)
        started = time.perf_counter()
        first = None
        last = None
        for chunk in sched.generate(model, prompts[index], params=params):
            if first is None:
                first = time.perf_counter() - started
            last = chunk
        assert last is not None and last.usage is not None and last.timings is not None
        with lock:
            results.append((last.usage.completion_tokens - 1, last.timings.decode_seconds, first or 0.0))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Same prompt length and max_tokens: every stream decodes over the same steps.
    window = statistics.mean(r[1] for r in results)
    return sum(r[0] for r in results) / window, statistics.median(r[2] for r in results)


def spread(values: list[float]) -> str:
    """median [min..max]."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"
