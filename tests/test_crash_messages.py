"""What a runner that dies while loading says: the CPU (SIGILL, or a machine whose CPU self-test failed), the
file (only when a re-check finds it damaged), or llama.cpp. A real runner process is killed by a real
signal while it starts; the verdicts are real self-test runs or stored ones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from candor.engine import cpu_selftest
from candor.engine.build_info import extra_buffer_types
from candor.engine.cpu_selftest import Verdict, cpu_verdict
from candor.errors import ModelLoadError
from candor.scheduler.process import RunnerProcess
from candor.scheduler.protocol import RunnerConfig


def runner_children() -> list[int]:
    """This process's runner children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"candor.scheduler.runner_child" in cmdline:
            found.append(int(entry.name))
    return found


def load_killed_by(sig: signal.Signals, path: Path, home: Path) -> str:
    """Start a runner for `path` and kill it with `sig` as soon as it exists (it is still importing)."""

    def kill() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for pid in runner_children():
                os.kill(pid, sig)
                return
            time.sleep(0.001)

    killer = threading.Thread(target=kill)
    killer.start()
    config = RunnerConfig(
        path=str(path), ctx=128, parallel=1, threads=1, batch=64, gpu_layers=0, home=str(home)
    )
    try:
        with pytest.raises(ModelLoadError) as failed:
            RunnerProcess("tiny", config, on_exit=lambda _: None, on_final=lambda *_: None)
    finally:
        killer.join()
    return str(failed.value)


def store_verdict(home: Path, verdict: Verdict) -> None:
    (home / "cache").mkdir(parents=True)
    entry = {"key": cpu_selftest.machine_key(), "verdict": verdict.to_json()}
    (home / "cache" / "cpu-selftest.json").write_text(json.dumps({"verdicts": [entry]}))


@pytest.mark.skipif(
    "CPU_REPACK" not in [n for n, _ in extra_buffer_types()], reason="no CPU_REPACK in this build"
)
def test_a_runner_killed_after_a_failed_selftest_names_the_cpu_not_the_file(
    tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as mp:
        mp.setenv("CANDOR_CPU_SELFTEST_FAULT", "CPU_REPACK")
        assert not cpu_verdict(tmp_path).passed
    for sig in (signal.SIGILL, signal.SIGSEGV):
        message = load_killed_by(sig, tiny_model_path, tmp_path)
        assert (
            f"killed by {sig.name}" in message
            and f"{sig.name} points at the CPU rather than the model file" in message
        )
        assert "CPU_REPACK" in message and "candor doctor" in message and "CANDOR_CPU_BUFFERS=none" in message
        assert "damaged" not in message and "download" not in message
    # killed from outside (the OOM killer, a user): not the CPU, even here
    assert "points at the CPU" not in load_killed_by(signal.SIGKILL, tiny_model_path, tmp_path)


def test_sigill_names_the_cpu_where_the_selftest_passed(tiny_model_path: Path, tmp_path: Path) -> None:
    store_verdict(tmp_path, Verdict(extra_buffer_types=("CPU_REPACK",)))
    message = load_killed_by(signal.SIGILL, tiny_model_path, tmp_path)
    assert "illegal instruction" in message and "candor doctor" in message and "damaged" not in message


def test_another_crash_on_a_sound_cpu_blames_the_file_only_when_it_is_damaged(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    store_verdict(tmp_path, Verdict(extra_buffer_types=("CPU_REPACK",)))
    intact = load_killed_by(signal.SIGSEGV, tiny_model_path, tmp_path)
    assert "killed by SIGSEGV" in intact and "passes candor's checks" in intact
    assert "damaged" not in intact and "points at the CPU" not in intact
    cut = tmp_path / "cut.gguf"
    shutil.copyfile(tiny_model_path, cut)
    os.truncate(cut, cut.stat().st_size // 2)  # what a re-check of the file finds
    damaged = load_killed_by(signal.SIGSEGV, cut, tmp_path)
    assert "killed by SIGSEGV" in damaged and "truncated or corrupt" in damaged
