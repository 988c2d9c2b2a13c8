"""Placement: GPU layers (the configured number, or the memory plan's best fit on the GPU's free memory),
and whether the weights are read into memory or mapped from the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from candor.config import Settings
from candor.engine.build_info import GpuMemory, gpu_memory
from candor.errors import InvalidParameter
from candor.identity import read_card
from candor.plan import MIB, holding, memory_plan
from candor.scheduler import Scheduler, SchedulerConfig, placement
from candor.scheduler.process import runner_environment
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


@pytest.mark.parametrize(
    ("mode", "host_mib", "available_mib", "in_ram", "says"),
    [
        ("auto", 400, 1000, True, "read into memory: 400 MiB fit in half of the 1000 MiB available"),
        ("auto", 500, 1000, True, "read into memory"),
        ("auto", 501, 1000, False, "mapped from the file: 501 MiB need more than half"),
        ("auto", 1, None, False, "available memory unknown"),
        ("ram", 5000, 1000, True, "CANDOR_LOAD_MODE=ram"),
        ("mmap", 1, 1000, False, "CANDOR_LOAD_MODE=mmap"),
    ],
)
def test_weights_are_read_into_memory_when_they_fit_in_half_of_what_is_available(
    mode: str, host_mib: int, available_mib: int | None, in_ram: bool, says: str
) -> None:
    available = None if available_mib is None else available_mib * MIB
    chosen, why = placement.hold_weights(mode, host_mib * MIB, available)
    assert chosen is in_ram and says in why


def test_available_memory_is_what_the_kernel_reports() -> None:
    available = placement.available_memory()
    assert available is not None and 0 < available <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_runners_ask_glibc_for_huge_pages_without_overriding_the_users_tunables() -> None:
    assert runner_environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    mine = runner_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "PATH": "/bin"})
    assert mine["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert mine["PATH"] == "/bin"
    off = runner_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert off["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


@pytest.mark.parametrize("mode", ["auto", "mmap"])
def test_the_scheduler_reports_how_the_weights_are_held(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("CANDOR_LOAD_MODE", mode)
    sched = Scheduler(config=SchedulerConfig(parallel=2, keep_alive=60))
    try:
        sched.load(str(tiny_model_path))
        [info] = sched.loaded()
        expected = "read into memory: " if mode == "auto" else "mapped from the file (CANDOR_LOAD_MODE=mmap)"
        assert info["weights"].startswith(expected)
    finally:
        sched.close()


def test_an_unknown_load_mode_names_the_setting_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDOR_LOAD_MODE", "swap")
    choices = r"CANDOR_LOAD_MODE='swap' is invalid \(must be one of auto, ram, mmap\)"
    with pytest.raises(InvalidParameter, match=choices):
        Settings.from_env()


@pytest.mark.parametrize(
    ("mode", "libc", "says"),
    [
        ("always [madvise] never", ("glibc", "2.36"), "yes (system mode 'madvise'; runners ask glibc 2.36"),
        ("always [madvise] never", ("glibc", "2.31"), "needs glibc 2.35 or newer to ask; this is glibc 2.31"),
        ("always madvise [never]", ("glibc", "2.36"), "off"),
        ("[always] madvise never", ("", ""), "yes (transparent huge pages are 'always'"),
    ],
)
def test_doctor_says_whether_weights_get_huge_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, libc: tuple[str, str], says: str
) -> None:
    setting = tmp_path / "enabled"
    setting.write_text(mode + "\n")
    monkeypatch.setattr(holding, "THP_SETTING", setting)
    monkeypatch.setattr(holding.platform, "libc_ver", lambda: libc)
    assert says in holding.huge_pages_status()
    setting.unlink()
    assert holding.huge_pages_status().startswith("not available")
