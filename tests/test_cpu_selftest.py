"""The CPU self-test: the real child runs the self-test model through this build's extra buffer types; a
test hook (CANDOR_CPU_SELFTEST_FAULT) makes a named type die by SIGILL, so the search, the verdict, its
cache and the fallback are tested on any CPU, besides whatever this machine's CPU really does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from candor.engine import cpu_selftest
from candor.engine.build_info import extra_buffer_types
from candor.engine.cpu_selftest import Verdict, choose_cpu_buffers, cpu_verdict, crash_hint, remembered

EXTRA = [name for name, _ in extra_buffer_types()]
needs_repack = pytest.mark.skipif("CPU_REPACK" not in EXTRA, reason="this llama.cpp build has no CPU_REPACK")


def fresh(tmp_path: Path, name: str = "home") -> Path:
    home = tmp_path / name
    home.mkdir()
    return home


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    """This machine's own verdict, with no fault injected."""
    return cpu_verdict(tmp_path_factory.mktemp("baseline"))


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    """The verdict where CPU_REPACK's kernels 'die by SIGILL' (the test hook)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CANDOR_CPU_SELFTEST_FAULT", "CPU_REPACK")
        return cpu_verdict(tmp_path_factory.mktemp("injected"))


def held_weights(verdict: Verdict) -> set[str]:
    return {name for t in verdict.trials for name, mib in t["buffers"].items() if mib > 0}


def test_the_selftest_model_reaches_every_extra_buffer_type_of_this_build(baseline: Verdict) -> None:
    assert not baseline.error
    assert list(baseline.extra_buffer_types) == EXTRA
    assert set(EXTRA) <= held_weights(baseline)  # each type held weights in some trial that ran
    assert set(baseline.faulty) | set(baseline.untested) <= set(EXTRA) | {"all"}
    if baseline.passed:
        assert baseline.trials[0]["name"] == "all" and baseline.trials[0]["ok"]


@needs_repack
def test_an_injected_fault_is_found_retried_and_named(baseline: Verdict, injected: Verdict) -> None:
    assert not injected.passed
    assert "CPU_REPACK" in injected.faulty and "SIGILL" in injected.faulty["CPU_REPACK"]
    # whatever really faults on this machine is still found; nothing else is blamed
    assert set(injected.faulty) - {"all"} == (set(baseline.faulty) - {"all"}) | {"CPU_REPACK"}
    alone = [t for t in injected.trials if t["name"] == "CPU_REPACK"]
    assert len(alone) == 2 and all(t["signal"] == "SIGILL" and t["stage"] == "loaded" for t in alone)
    assert injected.fallback_ok is True  # loading without extra buffer types still runs
    assert "CPU_REPACK" in injected.summary() and "SIGILL" in injected.summary()


@needs_repack
def test_a_faulty_type_makes_auto_load_without_extra_buffer_types(
    injected: Verdict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDOR_CPU_SELFTEST_FAULT", "CPU_REPACK")
    home = fresh(tmp_path)
    chosen = choose_cpu_buffers("auto", home)
    assert chosen.extra is False and "CPU_REPACK" in chosen.why and chosen.verdict is not None
    # a setting forces a choice without running the self-test
    assert choose_cpu_buffers("all", fresh(tmp_path, "b")).extra is True
    assert choose_cpu_buffers("none", fresh(tmp_path, "c")).extra is False
    assert remembered(tmp_path / "b") is None and remembered(tmp_path / "c") is None


def test_a_fault_in_a_type_this_build_lacks_changes_nothing(
    baseline: Verdict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDOR_CPU_SELFTEST_FAULT", "NO_SUCH_BUFFER_TYPE")
    verdict = cpu_verdict(fresh(tmp_path))
    assert verdict.faulty == baseline.faulty and verdict.passed == baseline.passed


def counting_child(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the self-test children started (the real one runs)."""
    runs: list[int] = []
    real = cpu_selftest._run_child

    def run(threads: int) -> Verdict:
        runs.append(threads)
        return real(threads)

    monkeypatch.setattr(cpu_selftest, "_run_child", run)
    return runs


def test_the_verdict_is_remembered_per_build_cpu_kernel_and_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fresh(tmp_path)
    runs = counting_child(monkeypatch)
    first = cpu_verdict(home)
    assert cpu_verdict(home) == first and len(runs) == 1  # remembered
    stored = json.loads((home / "cache" / "cpu-selftest.json").read_text())
    assert stored["verdicts"][0]["key"] == cpu_selftest.machine_key()
    assert set(stored["verdicts"][0]["key"]) == {"llama_cpp", "cpu", "kernel", "boot_id"}
    real_key = cpu_selftest.machine_key()
    for field, value in (("boot_id", "another-boot"), ("llama_cpp", "a rebuilt llama.cpp")):
        monkeypatch.setattr(cpu_selftest, "machine_key", lambda f=field, v=value: {**real_key, f: v})
        again = cpu_verdict(home)
        assert again.tested_at > first.tested_at  # tested anew for a new boot or build
    assert len(runs) == 3
    keys = [e["key"] for e in json.loads((home / "cache" / "cpu-selftest.json").read_text())["verdicts"]]
    assert real_key in keys and len(keys) == 3  # the other builds' and boots' verdicts stay


def test_a_corrupt_cache_is_tested_again_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fresh(tmp_path)
    (home / "cache").mkdir()
    (home / "cache" / "cpu-selftest.json").write_text("{not json")
    runs = counting_child(monkeypatch)
    cpu_verdict(home)
    assert len(runs) == 1 and remembered(home) is not None


def test_processes_that_load_at_once_share_one_test(tmp_path: Path) -> None:
    home = fresh(tmp_path)
    code = "from pathlib import Path; import sys; from candor.engine.cpu_selftest import cpu_verdict; "
    code += "print(cpu_verdict(Path(sys.argv[1])).tested_at)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    times = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(times) == 1  # the lock made two of them read the first one's verdict
    assert not list((home / "cache").glob("*.tmp"))  # written whole, renamed into place


def test_a_selftest_that_cannot_run_is_reported_and_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "started"
    # a child that fails the first time it runs, and the second
    monkeypatch.setattr(
        cpu_selftest, "_CHILD", (sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); exit(5)")
    )
    home = fresh(tmp_path)
    verdict = cpu_verdict(home)
    assert verdict.error.startswith("exit status 5") and marker.read_text() == "xx"  # retried once
    assert remembered(home) is None
    chosen = choose_cpu_buffers("auto", home)
    assert chosen.extra is True and "could not run" in chosen.why


def test_a_child_that_fails_once_is_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "failed-once"
    script = (
        f"import os, runpy, sys\nif not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close(); os.kill(os.getpid(), 9)\n"
        "sys.argv = ['x', *sys.argv[1:]]\n"
        "runpy.run_module('candor.engine.cpu_selftest_child', run_name='__main__')"
    )
    monkeypatch.setattr(cpu_selftest, "_CHILD", (sys.executable, "-c", script))
    verdict = cpu_verdict(fresh(tmp_path))
    assert marker.exists() and not verdict.error and list(verdict.extra_buffer_types) == EXTRA


@needs_repack
def test_a_crash_after_a_failed_selftest_points_at_the_cpu(
    injected: Verdict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDOR_CPU_SELFTEST_FAULT", "CPU_REPACK")
    home = fresh(tmp_path)
    cpu_verdict(home)
    hint = crash_hint("SIGSEGV", home)
    assert "SIGSEGV points at the CPU rather than the model file" in hint and "CPU_REPACK" in hint
    assert "candor doctor" in hint and "CANDOR_CPU_BUFFERS=none" in hint


def test_sigill_points_at_the_cpu_even_where_the_selftest_passed(tmp_path: Path) -> None:
    home = fresh(tmp_path)
    assert "illegal instruction" in crash_hint("SIGILL", home)
    passed = Verdict(extra_buffer_types=("CPU_REPACK",))
    os.makedirs(home / "cache")
    key = cpu_selftest.machine_key()
    (home / "cache" / "cpu-selftest.json").write_text(
        json.dumps({"verdicts": [{"key": key, "verdict": passed.to_json()}]})
    )
    assert remembered(home) == passed
    assert crash_hint("SIGSEGV", home) == ""  # another crash on a sound CPU says nothing of the CPU
    assert "illegal instruction" in crash_hint("SIGILL", home)
