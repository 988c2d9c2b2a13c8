"""A runner reads the default model's weights into memory on huge pages, or maps them when told to, and
both give the same text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from candor.plan import MIB
from candor.scheduler import Scheduler, SchedulerConfig
from candor.types import SamplingParams

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def memory_of(pid: int) -> dict[str, int]:
    """The process's /proc smaps totals, in bytes."""
    totals = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            totals[name] = int(rest.split()[0]) * 1024
    return totals


def greedy_text(sched: Scheduler, default_model_path: Path) -> str:
    params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    chunks = sched.generate(str(default_model_path), "The capital of France is", params=params)
    return "".join(c.text for c in chunks)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_weights_read_into_memory_sit_on_huge_pages_and_decode_as_mapped_ones_do(
    default_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = default_model_path.stat().st_size
    texts = {}
    for mode in ("auto", "mmap"):
        monkeypatch.setenv("CANDOR_LOAD_MODE", mode)
        sched = Scheduler(config=SchedulerConfig(parallel=2, keep_alive=-1))
        try:
            texts[mode] = greedy_text(sched, default_model_path)
            [info] = sched.loaded()
            held = memory_of(info["pid"])
        finally:
            sched.close()
        if mode == "auto":
            # this machine has GiBs available and the model needs under one
            assert info["weights"].startswith("read into memory: ")
            assert held["Anonymous"] > weights  # the weights are the runner's own memory...
            assert held.get("Pss_File", 0) < weights // 4  # ...not the file's page cache
            if "[never]" not in THP.read_text():
                # Half, not all: on a machine whose memory is fragmented the kernel may not find every
                # 2 MiB page, and falls back to small ones for the rest.
                huge = held["AnonHugePages"]
                assert huge > weights // 2, f"only {huge // MIB} MiB on huge pages"
        else:
            assert info["weights"] == "mapped from the file (CANDOR_LOAD_MODE=mmap)"
            assert held["Pss_File"] > weights // 2  # the weights stay in the page cache, mapped
    assert texts["auto"] == texts["mmap"] and texts["auto"].strip()
