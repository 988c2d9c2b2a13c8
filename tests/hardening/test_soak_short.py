"""scripts/soak.py, bounded for CI: 8 streaming clients on a real `candor serve` for ~20 s, the same checks.

The long run is by hand (`python scripts/soak.py`, 30 minutes). Here the script runs as it does then, as a
child process, and must pass: no request error, resident memory within 10% of the warm-up's, no
descriptor or thread growth. Its verdict is tested on its own too, so that a soak that cannot fail
cannot pass for one that did not.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("candor_soak_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    return module


def snapshots(soak: ModuleType, **change: object) -> list[object]:
    """20 one-second samples of a steady server and runner; `change` sets the last 5 samples' values."""
    steady = {"rss": {"server": 100 << 20, "runner": 500 << 20}, "fds": {"server": 19, "runner": 6}}
    steady |= {"threads": {"server": 5, "runner": 3}, "pids": (10, 11)}
    return [soak.Snapshot(at=float(t), **(steady | (change if t >= 15 else {}))) for t in range(20)]


def test_the_verdict_fails_on_growth_and_only_on_growth(soak: ModuleType) -> None:
    figures, failures = soak.judge(snapshots(soak), warmup=5)
    assert failures == [] and figures["rss_growth"] == {"runner": 0.0, "server": 0.0}

    grown = {"server": 110 << 20, "runner": 500 << 20}  # +10%: the limit
    _, failures = soak.judge(snapshots(soak, rss=grown), warmup=5)
    assert failures == ["server resident memory grew 10.0% after the warm-up"]
    _, failures = soak.judge(snapshots(soak, rss={"server": 109 << 20, "runner": 549 << 20}), warmup=5)
    assert failures == []

    _, failures = soak.judge(snapshots(soak, fds={"server": 20, "runner": 6}), warmup=5)
    assert failures == ["server fds grew from 19 to 20"]
    _, failures = soak.judge(snapshots(soak, threads={"server": 5, "runner": 4}), warmup=5)
    assert failures == ["runner threads grew from 3 to 4"]
    _, failures = soak.judge(snapshots(soak, pids=(10, 12)), warmup=5)
    assert len(failures) == 1 and "a runner restarted" in failures[0]

    _, failures = soak.judge(snapshots(soak)[:8], warmup=5)
    assert failures == ["only 3 samples after the warm-up; run longer"]


def test_a_short_soak_passes(soak: ModuleType) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--minutes",
            "0.34",
            "--interval",
            "0.5",
            "--max-tokens",
            "24",
            "--threads",
            "1",  # the clients need a core too: see test_faults_clients.py
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = json.loads(done.stdout)
    print(json.dumps(report, indent=1))  # the figures, with pytest -s
    assert report["failures"] == [], report
    assert done.returncode == 0
    assert report["errors"] == 0 and report["requests"] >= report["clients"]
    assert set(report["rss_end"]) == {"server", "runner"}
    assert report["tokens"] > 0
