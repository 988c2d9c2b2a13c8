"""Where a runner puts a model's layers (all on the CPU, as configured, or as many on the GPU as fit) and
how it holds the weights that stay in RAM (read into memory, or mapped from the file).

A runner process decides for itself, just before loading: asking a GPU how much memory is free creates
a driver context (hundreds of MiB on CUDA) in the asking process, which the scheduler must not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from candor.config import Settings
from candor.engine.build_info import gpu_memory
from candor.engine.cpu_selftest import CpuBuffers, choose_cpu_buffers
from candor.errors import CandorError
from candor.identity import read_card
from candor.plan import (
    GENERATION_CHECKPOINTS,
    GENERATION_SWA_FULL,
    MIB,
    MemoryPlan,
    available_memory,
    choose_gpu_layers,
    hold_weights,
    memory_plan,
)
from candor.scheduler.protocol import RunnerConfig

# Left free on every GPU, as llama-server's --fit leaves 1 GiB by default: the driver, the CUDA graphs and
# other processes take memory the plan does not see.
GPU_HEADROOM = 1024 * MIB


@dataclass(frozen=True)
class Placement:
    """How many layers go to the GPU, who decided, and the bytes each side will hold."""

    gpu_layers: int  # as llama.cpp takes it: -1 all
    decided_by: str
    host_bytes: int | None  # None: the plan could not be made (the weights' size is charged instead)
    gpu_bytes: int
    weights_in_ram: bool = False  # read into allocated memory, else mapped from the file
    weights: str = ""  # that choice and why, for /api/ps
    # whether llama.cpp's extra CPU buffer types hold weights, and why
    cpu_buffers: CpuBuffers = field(default_factory=lambda: CpuBuffers(True, "llama.cpp's default"))


def runner_cpu_buffers(config: RunnerConfig) -> CpuBuffers:
    """CANDOR_CPU_BUFFERS for a runner, decided as the CPU self-test's verdict (kept in its home) says."""
    home = Path(config.home) if config.home else Settings.from_env().home
    return choose_cpu_buffers(config.cpu_buffers, home, threads=config.threads)


def place(config: RunnerConfig) -> Placement:
    """Choose the CPU buffer types and GPU layers, then how to hold the weights."""
    buffers = runner_cpu_buffers(config)
    layers = place_layers(config, extra_buffers=buffers.extra)
    host = layers.host_bytes if layers.host_bytes is not None else Path(config.path).stat().st_size
    in_ram, why = hold_weights(config.load_mode, host, available_memory())
    return replace(layers, weights_in_ram=in_ram, weights=why, cpu_buffers=buffers)


def place_layers(config: RunnerConfig, *, extra_buffers: bool = True) -> Placement:
    """Choose GPU layers for a runner: the configured number, else the plan's best fit on free GPU memory."""
    gpus = gpu_memory()
    options: dict[str, Any] = {
        "extra_buffers": extra_buffers,
        "ctx": config.ctx * config.parallel,  # one KV stream of ctx cells per slot
        "parallel": config.parallel,
        "kv_type": config.kv_type,
        "n_batch": min(config.batch, config.ctx),
        "n_outputs_max": config.parallel,
        "kv_unified": False,
        "swa_full": GENERATION_SWA_FULL,
        "checkpoints": GENERATION_CHECKPOINTS,
        "gpu": bool(gpus),
    }
    try:
        card = read_card(Path(config.path))
        if not gpus:
            plan = memory_plan(card, gpu_layers=0, **options)
            return Placement(config.gpu_layers, "no GPU in this llama.cpp build", *_sides(plan))
        if config.gpu_layers >= 0:
            plan = memory_plan(card, gpu_layers=config.gpu_layers, **options)
            return Placement(config.gpu_layers, "CANDOR_GPU_LAYERS", *_sides(plan))
        free = sum(max(0, g.free - GPU_HEADROOM) for g in gpus)
        plan = choose_gpu_layers(card, free_gpu_bytes=free, **options)
        fit = f"{plan.gpu_layers} of {plan.n_layer + 1} layers fit in {free // MIB} MiB of free GPU memory"
        decided = f"{plan.decided_by}: {fit}"
        return Placement(plan.gpu_layers, decided, *_sides(plan))
    except (CandorError, OSError, ValueError, KeyError) as exc:
        # No plan (an architecture the plan does not know): llama.cpp gets the configured value as is.
        return Placement(config.gpu_layers, f"configured (no memory plan: {exc})", None, 0)


def _sides(plan: MemoryPlan) -> tuple[int, int]:
    return plan.bytes_of(device="CPU"), plan.bytes_of(device="GPU")
