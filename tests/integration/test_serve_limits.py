"""`candor serve`'s capacity flags reach the scheduler: slots, queue, loaded models, keep-alive."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import start_server, stop_server

from candor.cli import serve
from candor.errors import CandorError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_flags_and_environment_set_the_scheduler_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    config = serve.scheduler_config(parse("--parallel", "2", "--max-queue", "0", "--keep-alive", "30s"))
    assert (config.parallel, config.queue_max, config.keep_alive, config.allow_paths) == (2, 0, 30.0, False)
    monkeypatch.setenv("CANDOR_MAX_LOADED_MODELS", "3")
    monkeypatch.setenv("CANDOR_KEEP_ALIVE", "-1")
    config = serve.scheduler_config(parse())
    assert (config.parallel, config.queue_max, config.max_loaded, config.keep_alive) == (4, 32, 3, -1.0)


@pytest.mark.parametrize("argv", [("--parallel", "0"), ("--max-queue", "-1"), ("--max-loaded", "0")])
def test_impossible_limits_are_refused(argv: tuple[str, str]) -> None:
    with pytest.raises(CandorError, match=argv[0]):
        serve.scheduler_config(parse(*argv))


def test_a_bad_environment_value_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "candor", "serve", "--port", "1"],
        env={"CANDOR_PARALLEL": "many", "CANDOR_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "CANDOR_PARALLEL" in done.stderr


def test_one_slot_and_no_queue_answer_503_at_once(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path, "--parallel", "1", "--max-queue", "0")
    try:
        body = {"model": "gemma-3-270m:Q4_K_M", "prompt": "Count:", "options": {"num_predict": 4000}}
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as running:
            lines = running.iter_lines()  # kept: dropping the iterator would close the stream
            next(lines)  # the one slot is decoding
            started = time.monotonic()
            refused = httpx.post(url + "/api/generate", json={**body, "stream": False}, timeout=30)
            assert refused.status_code == 503 and "retry" in refused.json()["error"]
            assert time.monotonic() - started < 1.0
    finally:
        stop_server(proc)
