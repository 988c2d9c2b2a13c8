"""`candor serve` started for real, on a free loopback port with its own CANDOR_HOME, for the tests that
drive it over HTTP (and for scripts/fuzz_api.py and scripts/soak.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port nobody listens on (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `candor serve ARGS` and return once `/` answers: the process and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "candor", "serve", "--port", str(port), *args],
        env={**os.environ, **(env or {}), "CANDOR_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"candor serve exited with status {proc.returncode} before answering")
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"candor serve did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop it as Ctrl-C would, and wait; kill it if it does not stop."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def import_into(home: Path, path: Path, name: str) -> None:
    """`candor import PATH --name NAME` into the store at `home`, as a user would before serving it."""
    imported = subprocess.run(
        [sys.executable, "-m", "candor", "import", str(path), "--name", name],
        env={**os.environ, "CANDOR_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
