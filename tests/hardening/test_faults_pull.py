"""Pull faults: `candor pull` killed with SIGKILL mid-download and at every rename, and a disk that fills.

Each pull is `candor pull` (the CLI's main) in its own child process, downloading from the fake hub on
127.0.0.1, which pauses the body of a download at a chosen byte so that the kill lands exactly there; kills
at renames come from the child itself, at the exact call. After every kill: no name (candor's, or
the Hugging Face cache's snapshot path) points at a file with the wrong hash, the partial file is a
prefix of the real one, and the next pull finishes with a byte-identical file.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gguf_factory import write_tiny_llama
from hf_hub_server import FakeFile, FakeHub, FakeRepo, _Handler

from candor.store import Store

REPO = "test/faults-GGUF"
FILE = "faults-Q4_K_M.gguf"
NAME = f"hf.co/{REPO}:Q4_K_M"
KILL_POINTS = 20


# -- a hub that stops a download at a chosen byte --------------------------------------------------------


@dataclass
class PausingHub(FakeHub):
    """The fake hub, plus: the next GET of a file sends its bytes up to `pause_at`, then waits."""

    pause_at: int | None = None
    paused: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> PausingHub:
        """Listen on a free port of 127.0.0.1 with the pausing handler."""

        class Handler(_PausingHandler):
            pass

        Handler.hub = self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # quick to stop
        threading.Thread(target=serve, name="pausing-hub", daemon=True).start()
        return self

    def arm(self, offset: int) -> None:
        """Pause the next GET of a file once the body reaches file offset `offset`."""
        self.paused.clear()
        self.release.clear()
        self.pause_at = offset


class _PausingHandler(_Handler):
    hub: PausingHub

    def _file(self, repo: FakeRepo, f: FakeFile, headers: dict[str, str], *, body: bool) -> None:
        hub = self.hub
        if not body or hub.pause_at is None:
            super()._file(repo, f, headers, body=body)
            return
        stop, hub.pause_at = hub.pause_at, None
        data = f.body
        start, status = 0, 200
        if (requested := self.headers.get("Range")) is not None:
            start, status = int(requested.removeprefix("bytes=").split("-")[0]), 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data) - start)}.items():
            self.send_header(key, value)
        self.end_headers()
        with suppress(OSError):
            self.wfile.write(data[start : max(start, stop)])
            self.wfile.flush()
        hub.paused.set()
        hub.release.wait(30)  # the test kills the client meanwhile; the rest is never sent
        self.close_connection = True


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A tiny llama GGUF (about 480 KiB) that llama.cpp loads, so that a finished pull registers."""
    return write_tiny_llama(tmp_path_factory.mktemp("faults-blob") / "m.gguf").read_bytes()


def _hub(file: FakeFile) -> Iterator[PausingHub]:
    hub = PausingHub()
    hub.add(FakeRepo(REPO, {FILE: file}))
    hub.start()
    yield hub
    hub.release.set()
    hub.stop()


@pytest.fixture
def hub(model_bytes: bytes) -> Iterator[PausingHub]:
    """The pausing hub, serving the model as published."""
    yield from _hub(FakeFile(FILE, model_bytes))


@pytest.fixture
def damaging_hub(model_bytes: bytes) -> Iterator[PausingHub]:
    """The pausing hub, sending bytes that differ from the published sha256 (one flipped near the end)."""
    damaged = bytearray(model_bytes)
    damaged[-10] ^= 0xFF
    yield from _hub(FakeFile(FILE, model_bytes, served=bytes(damaged)))


@dataclass(frozen=True)
class Places:
    """Where one pull's files go."""

    hf_cache: Path
    candor_home: Path

    @property
    def blobs(self) -> Path:
        """The repo's blob folder in the Hugging Face cache."""
        return self.hf_cache / f"models--{REPO.replace('/', '--')}" / "blobs"

    def partials(self) -> list[Path]:
        """The repo's `.incomplete` files."""
        return sorted(self.blobs.glob("*.incomplete")) if self.blobs.is_dir() else []

    def env(self, hub: FakeHub) -> dict[str, str]:
        """The environment of a pull child."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE")
        }
        return {
            **env,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(self.hf_cache.parent),
            "HF_HUB_CACHE": str(self.hf_cache),
            "CANDOR_HOME": str(self.candor_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }


@pytest.fixture
def places(tmp_path: Path, candor_home: Path) -> Places:
    return Places(tmp_path / "hf-home" / "hub", candor_home)


# -- the pull children -----------------------------------------------------------------------------------

# A process that has imported candor once and forks one child per pull: each pull is a real process that
# a SIGKILL ends, without paying an interpreter start and candor's imports every time. A child runs
# `candor pull` with an optional kill point: SIGKILL itself just before or after the first call of
# os.replace / os.symlink whose source or destination contains a marker, exactly where a crash can land.
ZYGOTE = r"""
import json, os, resource, signal, sys, traceback
from candor.cli import main

def run(job):
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    os.environ.clear()
    os.environ.update(job["env"])
    hook, when, marker = job["hook"], job["when"], job["marker"]
    if hook:
        real = getattr(os, hook)

        def hooked(src, dst, *args, **kwargs):
            hit = marker in os.fspath(src) + "|" + os.fspath(dst)
            if hit and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(src, dst, *args, **kwargs)
            if hit and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(os, hook, hooked)
    if job["fsize"]:  # a disk full past `fsize` bytes per file, where no small file system can be mounted
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], hard))
    return main(["pull", job["ref"]])

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 98
        try:
            code = run(job)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Puller:
    """Start pull children through the zygote and collect how they ended."""

    def __init__(self, home: Path) -> None:
        self.home = home
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env["HF_HOME"] = str(home / "zygote-hf-home")  # huggingface_hub reads some paths at import
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.runs = 0
        self.pid = 0

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the pull child did not finish in time"
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return line.strip()

    def start(
        self,
        places: Places,
        hub: FakeHub,
        *,
        hook: str = "",
        when: str = "",
        marker: str = "",
        fsize: int = 0,
    ) -> int:
        """Fork a pull of NAME; its pid."""
        assert self.proc.stdin is not None
        self.runs += 1
        self.out, self.err = self.home / f"pull-{self.runs}.out", self.home / f"pull-{self.runs}.err"
        job = {
            "env": places.env(hub),
            "ref": NAME.removeprefix("hf.co/"),
            "hook": hook,
            "when": when,
            "marker": marker,
            "fsize": fsize,
            "stdout": str(self.out),
            "stderr": str(self.err),
        }
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        self.pid = int(self._line(30))
        return self.pid

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the child: its exit code (negative: the signal), stdout and stderr."""
        code = int(self._line(timeout))
        return code, self.out.read_text(), self.err.read_text()

    def run(self, places: Places, hub: FakeHub, **kill_point: Any) -> tuple[int, str, str]:
        """A whole pull."""
        self.start(places, hub, **kill_point)
        return self.finish()

    def close(self) -> None:
        """Stop the zygote (its stdin closes; it exits)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def puller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Puller]:
    zygote = Puller(tmp_path_factory.mktemp("pull-children"))
    yield zygote
    zygote.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_no_name_lies(places: Places, data: bytes, *, honest_hub: bool = True) -> None:
    """Every name that exists points at the right bytes; a partial file from an honest hub is a prefix."""
    good = hashlib.sha256(data).hexdigest()
    entry = Store().registry.find(NAME)
    if entry is not None:
        assert entry.sha256 == good and sha256(Path(entry.path)) == good, entry
    snapshots = places.hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots"
    for pointer in snapshots.glob(f"*/{FILE}"):
        assert sha256(pointer) == good, f"{pointer} exists with other bytes"
    for blob in places.blobs.iterdir() if places.blobs.is_dir() else ():
        if blob.name.endswith(".incomplete"):
            assert not honest_hub or data.startswith(blob.read_bytes()), f"{blob} is not a prefix of the file"
        else:
            assert blob.name == good and sha256(blob) == good, f"{blob} holds other bytes"


def assert_pulled(places: Places, data: bytes) -> None:
    entry = Store().registry.find(NAME)
    assert entry is not None
    assert Path(entry.path).read_bytes() == data
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert places.partials() == []


def wait_settled(paths: Callable[[], list[Path]], target: int, timeout: float = 2.0) -> int:
    """Wait until the partial file holds `target` bytes (or stops growing); its size then."""
    deadline = time.monotonic() + timeout
    size, last_change, previous = 0, time.monotonic(), -1
    while time.monotonic() < deadline:
        files = paths()
        size = files[0].stat().st_size if files else 0
        if files and size >= target:
            return size
        if size != previous:
            previous, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > 0.2:  # the rest sits in the child's write buffer
            break
        time.sleep(0.01)
    return size


# -- the tests -------------------------------------------------------------------------------------------


def kill_offsets(size: int) -> list[int]:
    """20 distinct byte offsets across a download: its first bytes, block edges, the middle, its end."""
    fixed = {0, 1, 4095, 4096, 4097, 65536, size // 2, size - 4096, size - 2, size - 1}
    spread = {size * k // (KILL_POINTS - len(fixed) + 1) for k in range(1, KILL_POINTS - len(fixed) + 1)}
    offsets = sorted(fixed | spread)
    while len(offsets) < KILL_POINTS:  # a collision between the two sets: fill in between
        gaps = [(b - a, a) for a, b in itertools.pairwise(offsets)]
        width, at = max(gaps)
        offsets = sorted({*offsets, at + width // 2})
    return offsets[:KILL_POINTS]


def test_sigkill_at_twenty_points_of_a_download_then_resume(
    hub: PausingHub, puller: Puller, places: Places, model_bytes: bytes
) -> None:
    offsets = kill_offsets(len(model_bytes))
    assert len(offsets) == KILL_POINTS == len(set(offsets))
    on_disk: list[int] = []
    for offset in offsets:
        hub.arm(offset)
        pid = puller.start(places, hub)
        try:
            assert hub.paused.wait(30), "the pull never reached the download"
            had = on_disk[-1] if on_disk else 0
            size = wait_settled(places.partials, offset)
        finally:
            os.kill(pid, signal.SIGKILL)
            hub.release.set()
        code, _, err = puller.finish()
        assert code == -signal.SIGKILL, err
        assert_no_name_lies(places, model_bytes)
        assert Store().registry.find(NAME) is None
        [partial] = places.partials()
        on_disk.append(partial.stat().st_size)
        assert on_disk[-1] == size >= had, "a resumed download lost bytes it had"
    assert on_disk[-1] > len(model_bytes) // 2, on_disk  # the kills really landed through the file
    hub.clear_log()
    code, out, err = puller.run(places, hub)
    assert code == 0, err
    assert out.splitlines()[0] == NAME
    gets = hub.log("GET", f"/resolve/{hub.repos[REPO].commit}/{FILE}")
    assert [g.range for g in gets] == [f"bytes={on_disk[-1]}-"]  # only the missing tail came again
    assert_pulled(places, model_bytes)
    assert_no_name_lies(places, model_bytes)


RENAME_POINTS = [
    ("replace", "before", ".incomplete"),  # the finished download, renamed to its blob
    ("replace", "after", ".incomplete"),
    ("symlink", "after", "/blobs/"),  # the snapshot path linked to the blob
    ("replace", "before", "refs/main"),
    ("replace", "before", "registry.json"),  # the name written into candor's index
    ("replace", "after", "registry.json"),
]


@pytest.mark.parametrize(("hook", "when", "marker"), RENAME_POINTS)
def test_sigkill_at_a_rename_then_pull_again(
    hub: PausingHub, puller: Puller, places: Places, model_bytes: bytes, hook: str, when: str, marker: str
) -> None:
    code, _, err = puller.run(places, hub, hook=hook, when=when, marker=marker)
    assert code == -signal.SIGKILL, err  # the kill point was reached
    assert_no_name_lies(places, model_bytes)
    registered = Store().registry.find(NAME) is not None
    assert registered == (marker == "registry.json" and when == "after")
    code, out, err = puller.run(places, hub)
    assert code == 0, err
    assert out.splitlines()[0] == NAME
    assert_pulled(places, model_bytes)
    assert_no_name_lies(places, model_bytes)


@pytest.mark.parametrize(("hook", "when", "marker"), RENAME_POINTS[:3])
def test_damaged_bytes_never_get_a_name_to_be_killed_at(
    damaging_hub: PausingHub,
    puller: Puller,
    places: Places,
    model_bytes: bytes,
    hook: str,
    when: str,
    marker: str,
) -> None:
    # Bytes that differ from the published hash are refused before the blob or the snapshot path is named:
    # the kill points at those renames are never reached, so no crash can leave a name on them.
    damaging_hub.arm(len(model_bytes) // 2)
    pid = puller.start(places, damaging_hub, hook=hook, when=when, marker=marker)
    try:
        assert damaging_hub.paused.wait(30)
        wait_settled(places.partials, len(model_bytes) // 2)
    finally:
        os.kill(pid, signal.SIGKILL)  # first a kill half way through the download
        damaging_hub.release.set()
    assert puller.finish()[0] == -signal.SIGKILL
    assert_no_name_lies(places, model_bytes, honest_hub=False)
    code, out, err = puller.run(places, damaging_hub, hook=hook, when=when, marker=marker)
    assert_no_name_lies(
        places, model_bytes, honest_hub=False
    )  # the cache's paths too: llama.cpp -hf reads them
    assert code == 1 and out == "", f"killed at {hook} {when} {marker}: {err}"
    assert "does not match the hash the hub published" in err and "Traceback" not in err, err
    assert places.partials() == [] and Store().registry.find(NAME) is None
    assert not list(places.blobs.iterdir())


# -- a full disk -----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 256 KiB tmpfs (None where this process may not mount one)."""
    where = tmp_path / "small-disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("full", ["tmpfs", "fsize"])
def test_a_full_disk_is_a_clear_error_and_the_pull_resumes(
    hub: PausingHub,
    puller: Puller,
    small_disk: Path | None,
    tmp_path: Path,
    candor_home: Path,
    model_bytes: bytes,
    full: str,
) -> None:
    # A 256 KiB tmpfs that fills (ENOSPC), or RLIMIT_FSIZE in the child (EFBIG) where mounting is not allowed.
    if full == "tmpfs" and small_disk is None:
        pytest.skip("this process may not mount a tmpfs")
    if full == "fsize" and not hasattr(resource, "RLIMIT_FSIZE"):
        pytest.skip("needs RLIMIT_FSIZE (POSIX)")
    places = Places((small_disk if small_disk and full == "tmpfs" else tmp_path) / "hub", candor_home)
    code, out, err = puller.run(places, hub, fsize=200_000 if full == "fsize" else 0)
    assert code == 1 and out == ""
    [line] = [x for x in err.splitlines() if x.startswith("Error:")]
    assert "free disk space" in line and "pull again" in line and FILE in line, err
    assert "Traceback" not in err
    assert Store().registry.find(NAME) is None
    assert_no_name_lies(places, model_bytes)
    assert not list(places.hf_cache.glob(f"models--*/snapshots/*/{FILE}"))  # nothing under its name
    [partial] = places.partials()  # kept, to resume from
    kept = partial.stat().st_size
    assert 0 < kept < len(model_bytes)

    if full == "tmpfs":
        subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    hub.clear_log()
    code, out, err = puller.run(places, hub)
    assert code == 0, err
    assert [g.range for g in hub.log("GET", FILE)] == [f"bytes={kept}-"]
    assert_pulled(places, model_bytes)


def test_a_full_disk_under_candor_home_is_a_clear_error(
    hub: PausingHub,
    puller: Puller,
    small_disk: Path | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_bytes: bytes,
) -> None:
    if small_disk is None:
        pytest.skip("needs a tmpfs mount (the model index is too small for RLIMIT_FSIZE to single it out)")
    home = small_disk / "candor-home"
    monkeypatch.setenv("CANDOR_HOME", str(home))
    places = Places(tmp_path / "hub", home)
    with (small_disk / "filler").open("wb") as filler, suppress(OSError):
        filler.write(bytes(1 << 20))  # the download has room; candor's own index has none
    code, out, err = puller.run(places, hub)
    assert code == 1 and out == "" and "unexpected" not in err, err
    [line] = [x for x in err.splitlines() if x.startswith("Error:")]
    assert "free disk space" in line or "No space left" in line, err
    assert Store().registry.find(NAME) is None
