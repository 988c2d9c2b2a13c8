"""The parent's side of one runner process: start it, talk to it, notice when it dies."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from candor.config import Settings
from candor.engine.cpu_selftest import crash_hint
from candor.errors import CandorError, ModelLoadError, RunnerCrashed
from candor.preflight import preflight
from candor.scheduler.handle import RequestHandle
from candor.scheduler.protocol import (
    Cancel,
    Detokenize,
    Embed,
    Events,
    Generate,
    Ready,
    Rerank,
    Result,
    RunnerConfig,
    Shutdown,
    Tokenize,
    unpack_error,
)

logger = logging.getLogger(__name__)

# glibc's malloc marks the blocks it maps (llama.cpp's weight, KV-cache and compute buffers) for transparent
# huge pages. Most distributions enable those only where a program asks (THP "madvise" mode) and llama.cpp
# never asks, so without this its buffers sit on 4 KiB pages. glibc reads tunables once, at exec; glibc
# older than 2.35 and other C libraries ignore this one.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def runner_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a runner starts with: ours, plus the huge-pages tunable unless one is set."""
    env = dict(os.environ if environ is None else environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return env


class RunnerProcess:
    """A started runner. Thread-safe: many callers submit; one reader thread dispatches what comes back."""

    def __init__(
        self,
        name: str,
        config: RunnerConfig,
        *,
        on_exit: Callable[[RunnerProcess], None],
        on_final: Callable[[RequestHandle, Any], None],
        load_timeout: float = 300.0,
    ) -> None:
        self.name = name
        self.config = config
        self._on_exit = on_exit
        self._on_final = on_final
        parent_sock, child_sock = socket.socketpair()
        child_fd = child_sock.fileno()
        # A fresh interpreter (not fork: the parent may hold llama.cpp threads; not multiprocessing's
        # spawn: it would re-import the caller's main script).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "candor.scheduler.runner_child", str(child_fd)],
            pass_fds=(child_fd,),
            env=runner_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._stderr_tail: deque[str] = deque(maxlen=20)  # where a native abort explains itself
        threading.Thread(target=self._drain_stderr, name=f"candor-stderr {name}", daemon=True).start()
        self._conn.send(config)
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)  # request ids, unique within this runner
        self._handles: dict[int, RequestHandle] = {}
        self._results: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._state_lock = threading.Lock()
        self.closed = False
        self.ready = self._await_ready(load_timeout)
        self._reader = threading.Thread(target=self._read, name=f"candor-reader {name}", daemon=True)
        self._reader.start()

    def _await_ready(self, timeout: float) -> Ready:
        if not self._conn.poll(timeout):
            self.process.kill()
            self._join(5)
            raise ModelLoadError(f"{self.name} did not load within {timeout:.0f} s")
        try:
            first = self._conn.recv()
        except (EOFError, OSError):  # OSError: it died with our config still unread (a reset)
            self._join(5)
            raise ModelLoadError(self._load_crash_text()) from None
        if isinstance(first, Ready):
            return first
        self._join(5)
        raise unpack_error(first)

    def _load_crash_text(self) -> str:
        """Why the runner died while loading: the CPU, the file (when a re-check finds it damaged), or
        llama.cpp itself."""
        crashed = f"llama.cpp crashed while loading {self.name} ({self._exit_text()})"
        hint = self._cpu_hint()
        if hint:
            return f"{crashed}. {hint}"
        try:
            preflight(Path(self.config.path))
        except CandorError as exc:  # the file changed or was damaged since it was checked
            return f"{crashed}: {exc}"
        return (
            f"{crashed}; the file passes candor's checks, so this llama.cpp cannot run it: upgrade "
            "llama-cpp-python for a newer llama.cpp (`candor doctor` shows the build and the CPU self-test)"
        )

    def _cpu_hint(self) -> str:
        code = self.process.poll()
        if code is None or code >= 0:
            return ""
        home = Path(self.config.home) if self.config.home else Settings.from_env().home
        return crash_hint(signal.Signals(-code).name, home)

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                self._stderr_tail.append(line)

    def _exit_text(self) -> str:
        code = self.process.poll()
        if code is None:
            return "still running"
        text = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        detail = [line for line in self._stderr_tail if "assert" in line.lower() or "error" in line.lower()]
        return text + (f": {detail[-1]}" if detail else "")

    def _join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)

    # -- requests ------------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Requests in flight on this runner."""
        with self._state_lock:
            return len(self._handles)

    def _send(self, message: Any) -> None:
        with self._send_lock:
            if self.closed:
                raise RunnerCrashed(f"the runner of {self.name} has stopped; retry to load the model again")
            self._conn.send(message)

    def generate(self, message_factory: Callable[[int], Generate]) -> RequestHandle:
        """Start a generation; the factory gets the request id."""
        request_id = next(self._ids)
        handle = RequestHandle(request_id, self.name, self._cancel)
        with self._state_lock:
            self._handles[request_id] = handle
        try:
            self._send(message_factory(request_id))
        except (OSError, CandorError):
            with self._state_lock:
                self._handles.pop(request_id, None)
            raise
        return handle

    def _cancel(self, request_id: int) -> None:
        with self._state_lock:
            handle = self._handles.pop(request_id, None)
        if handle is None:
            return
        self._on_final(handle, None)
        with contextlib.suppress(OSError, CandorError):  # a runner that is gone has nothing to cancel
            self._send(Cancel(request_id))

    def call(
        self, make: Callable[[int], Embed | Rerank | Tokenize | Detokenize], timeout: float = 600.0
    ) -> Any:
        """A one-shot request (embeddings, scores, tokenization): send it and wait for its Result."""
        request_id = next(self._ids)
        done = threading.Event()
        box: list[Any] = []
        with self._state_lock:
            self._results[request_id] = (done, box)
        self._send(make(request_id))
        if not done.wait(timeout):
            raise RunnerCrashed(f"{self.name} did not answer within {timeout:.0f} s")
        value = box[0]
        if isinstance(value, CandorError):
            raise value
        return value

    # -- the reader thread ---------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                for message in self._conn.recv():  # the runner sends what it has in one list
                    if isinstance(message, Events):
                        self._dispatch(message)
                    elif isinstance(message, Result):
                        self._answer(message)
        except (EOFError, OSError):
            pass
        self._fail_all()

    def _dispatch(self, message: Events) -> None:
        for request_id, chunk, packed in message.items:
            with self._state_lock:
                handle = self._handles.get(request_id)
            if handle is None:
                continue  # cancelled meanwhile
            item = unpack_error(packed) if packed else chunk
            final = packed is not None or chunk.finish_reason is not None
            if final:
                with self._state_lock:
                    self._handles.pop(request_id, None)
                self._on_final(handle, item)
            handle.deliver(item)

    def _answer(self, message: Result) -> None:
        with self._state_lock:
            waiter = self._results.pop(message.id, None)
        if waiter is None:
            return
        value = message.value
        if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
            value = unpack_error(value)
        waiter[1].append(value)
        waiter[0].set()

    def _fail_all(self) -> None:
        """The runner is gone: every request on it gets an error, and the scheduler forgets the model."""
        was_closing = self.closed
        self.closed = True
        self._join(5)
        hint = self._cpu_hint()
        error = RunnerCrashed(
            f"the runner of {self.name} stopped ({self._exit_text()}) while serving this request; "
            "the model reloads on the next request" + (f". {hint}" if hint else "")
        )
        with self._state_lock:
            handles, self._handles = self._handles, {}
            results, self._results = self._results, {}
        self._on_exit(self)  # forget the model first, so a retry after the error loads it afresh
        for handle in handles.values():
            self._on_final(handle, error)
            handle.deliver(error)
        for done, box in results.values():
            box.append(error)
            done.set()
        if not was_closing:
            logger.warning("runner of %s stopped: %s", self.name, self._exit_text())

    def close(self, timeout: float = 10.0) -> None:
        """Ask the runner to exit; kill it if it does not."""
        if not self.closed:
            with contextlib.suppress(OSError), self._send_lock:
                self._conn.send(Shutdown())
            self.closed = True
        self._join(timeout)
        if self.process.poll() is None:
            self.process.kill()
            self._join(5)
        self._conn.close()
