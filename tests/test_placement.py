"""GPU layer placement: the configured number, or the memory plan's best fit on the GPU's free memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from candor.engine.build_info import GpuMemory, gpu_memory
from candor.identity import read_card
from candor.plan import MIB, memory_plan
from candor.scheduler import Scheduler, SchedulerConfig, placement
from candor.scheduler.protocol import RunnerConfig


def config(path: Path, gpu_layers: int = -1) -> RunnerConfig:
    return RunnerConfig(path=str(path), ctx=256, parallel=2, threads=1, batch=64, gpu_layers=gpu_layers)


def test_a_cpu_build_reports_no_gpu_and_keeps_the_configured_layers(tiny_model_path: Path) -> None:
    assert gpu_memory() == ()  # this machine's llama.cpp has no GPU backend
    chosen = placement.place(config(tiny_model_path))
    assert chosen.gpu_layers == -1 and chosen.gpu_bytes == 0
    assert "no GPU" in chosen.decided_by
    plan = memory_plan(
        read_card(tiny_model_path), ctx=512, parallel=2, n_batch=64, n_outputs_max=2, kv_unified=False
    )
    assert chosen.host_bytes == plan.total


@pytest.mark.parametrize("free_mib", [0, 1024 + 1, 1024 + 64, 1 << 20])
def test_auto_placement_offloads_what_fits_in_free_memory(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, free_mib: int
) -> None:
    # The device report is simulated; the decision (the memory plan bisected over layers) is real.
    monkeypatch.setattr(placement, "gpu_memory", lambda: (GpuMemory("CUDA0", free_mib * MIB, 80 << 30),))
    chosen = placement.place(config(tiny_model_path))
    room = max(0, free_mib * MIB - placement.GPU_HEADROOM)
    assert chosen.gpu_bytes <= room
    assert chosen.host_bytes is not None and chosen.gpu_bytes + chosen.host_bytes > 0
    if free_mib == 1 << 20:
        assert chosen.gpu_layers == read_card(tiny_model_path).block_count + 1  # everything fits
    if free_mib <= 1024:
        assert chosen.gpu_layers == 0 and chosen.gpu_bytes == 0
    assert "layers fit" in chosen.decided_by


def test_configured_layers_win_over_the_plan(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "gpu_memory", lambda: (GpuMemory("CUDA0", 0, 80 << 30),))
    chosen = placement.place(config(tiny_model_path, gpu_layers=1))
    assert chosen.gpu_layers == 1 and chosen.decided_by == "CANDOR_GPU_LAYERS" and chosen.gpu_bytes > 0


def test_the_scheduler_reports_the_placement(tiny_model_path: Path) -> None:
    sched = Scheduler(config=SchedulerConfig(parallel=2, keep_alive=60))
    try:
        sched.load(str(tiny_model_path))
        [info] = sched.loaded()
        assert info["size_vram"] == 0 and "no GPU" in info["placement"]
        assert info["size"] > 0
    finally:
        sched.close()
