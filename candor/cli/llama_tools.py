"""llama.cpp's own tools (llama-bench, llama-batched-bench) run as subprocesses, for `candor bench` and
benchmarks/: where they are, which build they are, and one measurement each."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from candor import config
from candor.errors import CandorError


def find_llama_tools(explicit: str | None = None) -> Path | None:
    """The folder holding llama-bench built at llama-cpp-python's llama.cpp commit, if there is one."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit) / "llama-bench")
    if found := shutil.which("llama-bench"):
        candidates.append(Path(found))
    version = importlib.metadata.version("llama-cpp-python")  # the package's, without loading llama.cpp
    cache = str(config.read("CANDOR_REF_DIR"))
    # the default build first, then those built with other CMAKE_ARGS (a suffix per set of flags)
    for suffix in ("", "-*"):
        pattern = f"{cache}/llama-cpp-python-{version}{suffix}/build/bin/llama-bench"
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
    # Imported here: finding and describing the tools needs no scheduler (whose imports load llama.cpp).
    from candor.scheduler.process import runner_environment

    return [*cmd, "--load-mode", "none"], runner_environment()


def llama_bench(
    tools: Path,
    model: Path,
    threads: int,
    *,
    prompt: int,
    gen: int,
    depth: int = 0,
    in_ram: bool = False,
    extra_buffers: bool = True,
) -> float:
    """One llama-bench measurement (it warms up first); tokens/s. With `depth` the test runs after that
    many random tokens are in the KV cache (`-d`, not timed). Without `extra_buffers` it holds no
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
        *(["-d", str(depth)] if depth else []),
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
