"""The model pool: each loaded model in its runner process, loaded on first use, placed, kept alive,
evicted when another needs room.

Several models stay loaded up to a count and a memory budget, the least recently used idle one making
room; each model unloads after its keep-alive, timed by an injectable clock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candor.config import Settings
from candor.engine.cpu_selftest import choose_cpu_buffers
from candor.errors import Busy, CandorError
from candor.gguf_file import GGUFHeader, read_gguf
from candor.identity import ModelCard
from candor.parameters import sampling_defaults
from candor.plan.context_size import ContextChoice, context_for, default_budget
from candor.preflight import checked_card
from candor.prompt import ChatFormat, chat_format_of
from candor.scheduler.handle import RequestHandle
from candor.scheduler.metrics import Metrics
from candor.scheduler.process import RunnerProcess
from candor.scheduler.protocol import RunnerConfig
from candor.store import Store, StoreEntry
from candor.types import Chunk, SamplingParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits, chosen for a small machine; every one is settable."""

    parallel: int = 4  # sequences decoded together per model (slots)
    queue_max: int = 32  # requests waiting beyond the busy slots, per model
    max_loaded: int = 2  # models kept loaded at once
    memory_budget: int | None = None  # bytes for loaded models; None: 75% of physical memory
    keep_alive: float = 300.0  # seconds an idle model stays loaded; negative: forever
    load_timeout: float = 300.0
    kv_type: str = "f16"
    allow_paths: bool = True  # the HTTP server sets False: requests name models, never files


def defaults_of(entry: StoreEntry | None, fmt: ChatFormat | None = None) -> SamplingParams:
    """Sampling defaults: for chat answers the chat format's (a model without a template is bounded),
    then a store entry's parameters (an imported Ollama model's params layer)."""
    return sampling_defaults(entry.parameters if entry else {}, fmt.options if fmt is not None else None)


@dataclass
class LoadedModel:
    """A model file with a live runner (shared by every name of that file)."""

    name: str  # the name it was first loaded by, shown by `candor ps`
    key: str  # the resolved file path: what the scheduler keys runners by
    path: Path
    entry: StoreEntry | None
    card: ModelCard
    chat_format: ChatFormat
    runner: RunnerProcess
    ctx: int
    size: int  # bytes this model is charged against the memory budget
    keep_alive: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None  # wall-clock time of unloading when idle; None: not scheduled
    defaults: SamplingParams = field(default_factory=SamplingParams)
    names: set[str] = field(default_factory=set)  # every name requests used for this file
    claims: int = 0  # requests between load() and their runner taking them (see ModelPool.claim)
    context: ContextChoice | None = None  # how long each slot's context is, and why

    @property
    def idle(self) -> bool:
        """No request on it, and none on its way to it: the reaper and eviction may close it."""
        return self.runner.active == 0 and self.claims == 0

    def info(self) -> dict[str, Any]:
        """What `candor ps` and /api/ps show."""
        return {
            "name": self.name,
            "names": sorted(self.names),
            "path": str(self.path),
            "size": self.size,
            "context_length": self.ctx,
            "context_reason": self.context.reason() if self.context is not None else None,
            "parallel": self.runner.ready.parallel,
            "active_requests": self.runner.active,
            "expires_at": self.expires_at,
            "keep_alive": self.keep_alive,
            "loaded_at": self.loaded_at,
            "identity": self.card.summary(),
            "card": self.card,  # what the file says it is, for /api/ps's details
            "sha256": self.entry.sha256 if self.entry is not None else None,
            "pid": self.runner.process.pid,
            "size_vram": self.runner.ready.gpu_bytes,
            "gpu_layers": self.runner.ready.gpu_layers,
            "placement": self.runner.ready.placement,
            "weights": self.runner.ready.weights,
            "cpu_buffers": self.runner.ready.cpu_buffers,
        }


def _header_or_none(path: Path) -> GGUFHeader | None:
    """The file's header, read once for the several plans that size its context (None: plan without)."""
    try:
        return read_gguf(path)
    except (CandorError, OSError):
        return None


def _serves(loaded: LoadedModel, ctx: int | None) -> bool:
    """Whether a loaded model has room for `ctx` tokens a request (capped at its trained context, as the
    runner caps it)."""
    trained = loaded.card.context_length
    wanted = min(ctx, trained) if ctx is not None and trained else ctx
    return wanted is None or wanted <= loaded.ctx


# Seconds a model loaded for a `keep_alive: 0` request is kept for that request to reach it.
FIRST_REQUEST_GRACE = 10.0
# The keep-alive thread wakes at the next deadline, at most this late (deadlines set later wake it).
REAP_IDLE_SECONDS = 60.0
REAP_MIN_SECONDS = 0.01


class ModelPool:
    """Thread-safe. The scheduler owns one; close() unloads everything."""

    def __init__(
        self,
        settings: Settings,
        config: SchedulerConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = Store(settings)
        self.metrics = metrics
        self.clock = clock  # wall-clock seconds: keep-alive deadlines (tests advance a fake one)
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="candor-keepalive", daemon=True)
        self._reaper.start()

    # -- loading ---------------------------------------------------------------------------------------

    def _key(self, model: str | None) -> tuple[str, Path, StoreEntry | None]:
        """Runners are keyed by the file they load (as Ollama keys them by model path): two names for
        one file share one runner instead of holding the weights twice."""
        path, entry = self.store.resolve(model, allow_paths=self.config.allow_paths)
        return str(path.resolve()), path, entry

    def load(
        self,
        model: str | None,
        *,
        ctx: int | None = None,
        keep_alive: float | None = None,
        claim: bool = False,
    ) -> LoadedModel:
        """Make sure a model is loaded (with at least `ctx` tokens per request) and return it.

        A `keep_alive` other than 0 takes effect at once (Ollama's "pin it": -1, or "1h"); 0 unloads the
        model when the request that carried it ends (or at once through `unload`). With `claim`, the model
        is returned claimed (see claim).
        """
        key, path, entry = self._key(model)
        name = entry.name if entry is not None else str(path)
        with self._lock:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:  # one load per model at a time; other models load in parallel
            with self._lock:
                loaded = self._models.get(key)
                if loaded is not None and loaded.runner.closed:  # its runner died: start afresh
                    del self._models[key]
                    loaded = None
                if loaded is not None and _serves(loaded, ctx) and claim:
                    loaded.claims += 1  # under the lock the reaper checks: it cannot be closing it now
            if loaded is not None and _serves(loaded, ctx):
                if keep_alive is not None:
                    loaded.keep_alive = keep_alive
                    if keep_alive != 0 and not loaded.runner.active:
                        self.schedule_expiry(loaded)
                loaded.names.add(name)
                return loaded
            if loaded is not None:  # a request wants a larger context: reload when idle, as Ollama does
                if not loaded.idle:
                    raise Busy(
                        f"{name} is serving requests with a {loaded.ctx}-token context; retry for {ctx}"
                    )
                self._unload(loaded, evicted=False)
            return self._start(key, path, entry, ctx=ctx, keep_alive=keep_alive, claim=claim)

    def is_ready(self, model: str | None, *, ctx: int | None = None) -> bool:
        """Whether load() would return at once: the model's runner is up with at least `ctx` tokens."""
        try:
            key, _, _ = self._key(model)
        except CandorError:
            return False  # load() says why
        with self._lock:
            loaded = self._models.get(key)
        return loaded is not None and not loaded.runner.closed and _serves(loaded, ctx)

    def _start(
        self,
        key: str,
        path: Path,
        entry: StoreEntry | None,
        *,
        ctx: int | None,
        keep_alive: float | None,
        claim: bool,
    ) -> LoadedModel:
        card = checked_card(path)
        header = _header_or_none(path)
        choice = context_for(
            ctx if ctx is not None else self.settings.ctx,
            card.context_length,
            lambda n: self._charge(card, path, n, header),
            self._budget(),
        )
        ctx = choice.per_slot  # what the runner will use: plan and charge for that
        size = self._charge(card, path, ctx, header)
        self._make_room(size)
        config = RunnerConfig(
            path=str(path),
            ctx=ctx,
            parallel=self.config.parallel,
            threads=self.settings.threads,
            batch=self.settings.batch,
            gpu_layers=self.settings.gpu_layers,
            kv_type=self.config.kv_type,
            load_mode=self.settings.load_mode,
            cpu_buffers=self.settings.cpu_buffers,
            home=str(self.settings.home),
        )
        name = entry.name if entry is not None else str(path)
        runner = RunnerProcess(
            name,
            config,
            on_exit=self._runner_exited,
            on_final=self._request_finished,
            load_timeout=self.config.load_timeout,
        )
        fmt = chat_format_of(card)
        loaded = LoadedModel(
            name=name,
            key=key,
            path=path,
            entry=entry,
            card=card,
            chat_format=fmt,
            runner=runner,
            ctx=runner.ready.max_request_tokens,
            # Charged up front as if all on the CPU; once the runner has placed layers on a GPU, RAM holds
            # only the rest.
            size=size if runner.ready.host_bytes is None else runner.ready.host_bytes,
            keep_alive=self.config.keep_alive if keep_alive is None else keep_alive,
            defaults=defaults_of(entry),
            names={name},
            claims=int(claim),  # before it is registered: `keep_alive: 0` makes it due at once
            context=choice,
        )
        with self._lock:
            self._models[key] = loaded
        self.metrics.add(loads=1)
        self.schedule_expiry(loaded)
        if loaded.keep_alive == 0 and loaded.expires_at is not None:
            # Loaded for a request that wants it unloaded when it ends: the server resolves the request
            # (template, reply plan) before handing it over, and a model due at once would be closed, and
            # loaded again, in between. If the request never comes (it was refused), it goes after this.
            loaded.expires_at += FIRST_REQUEST_GRACE
        return loaded

    def _charge(self, card: ModelCard, path: Path, ctx: int, header: GGUFHeader | None) -> int:
        """Bytes a model will take with `ctx` tokens per slot: the memory plan when available, else the
        weights' size."""
        try:
            from candor.plan import GENERATION_CHECKPOINTS, GENERATION_SWA_FULL, memory_plan

            buffers = choose_cpu_buffers(self.settings.cpu_buffers, self.settings.home)
            return int(
                memory_plan(
                    card,
                    extra_buffers=buffers.extra,
                    ctx=ctx * self.config.parallel,  # the runner's KV: one stream of ctx cells per slot
                    parallel=self.config.parallel,
                    kv_type=self.config.kv_type,
                    n_batch=self.settings.batch,
                    n_outputs_max=self.config.parallel,
                    kv_unified=False,
                    swa_full=GENERATION_SWA_FULL,
                    checkpoints=GENERATION_CHECKPOINTS,
                    header=header,
                ).total
            )
        except (ImportError, CandorError, AttributeError, TypeError):
            return path.stat().st_size

    def _budget(self) -> int:
        return self.config.memory_budget or default_budget()

    def _make_room(self, size: int) -> None:
        """Evict least recently used idle models until the new one fits the count and the budget."""
        while True:
            with self._lock:
                loaded = list(self._models.values())
                used = sum(m.size for m in loaded)
                if len(loaded) < self.config.max_loaded and used + size <= self._budget():
                    return
                idle = sorted((m for m in loaded if m.idle), key=lambda m: m.last_used)
                if not idle:
                    if not loaded:
                        return  # nothing to evict: try anyway, llama.cpp will say if it cannot allocate
                    raise Busy("every loaded model is busy and no more fit; retry when one is idle")
                victim = idle[0]
            self._unload(victim, evicted=True, only_idle=True)

    def unload(self, model: str | None) -> bool:
        """Unload a model: now when idle, else as soon as the requests on it end (as Ollama does: one
        client's `keep_alive: 0` or `candor stop` never cuts off another's answer). False when not loaded."""
        key, _, _ = self._key(model)
        with self._lock:
            loaded = self._models.get(key)
        if loaded is None:
            return False
        self._unload_when_idle(loaded)
        return True

    def unload_name(self, name: str) -> bool:
        """Forget a removed name; unload its file (when idle) once no other name of it is in use."""
        with self._lock:
            matches = [m for m in self._models.values() if name in m.names]
            for loaded in matches:
                loaded.names.discard(name)
                if loaded.name == name and loaded.names:
                    loaded.name = min(loaded.names)  # `candor ps` shows a name that still exists
        for loaded in matches:
            if not loaded.names:
                self._unload_when_idle(loaded)
        return bool(matches)

    def _unload_when_idle(self, loaded: LoadedModel) -> None:
        if not self._unload(loaded, evicted=False, only_idle=True):
            loaded.keep_alive = 0  # the keep-alive reaper unloads it when its last request ends
            self.schedule_expiry(loaded)

    def _unload(
        self, loaded: LoadedModel, *, evicted: bool, only_idle: bool = False, due_by: float | None = None
    ) -> bool:
        """Close a model's runner; False, leaving it, when `only_idle` and a request has reached or claimed
        it since the caller looked, or when it is no longer due by `due_by` (a request renewed it)."""
        with self._lock:
            if only_idle and not loaded.idle:
                return False
            if due_by is not None and (loaded.expires_at is None or loaded.expires_at > due_by):
                return False
            if self._models.get(loaded.key) is loaded:
                del self._models[loaded.key]
        loaded.runner.close()
        if evicted:
            self.metrics.add(evictions=1)
        return True

    def _with_runner(self, runner_name: str) -> LoadedModel | None:
        """The loaded model whose runner has this name (the name it was loaded by); call under the lock."""
        return next((m for m in self._models.values() if m.runner.name == runner_name), None)

    def loaded(self) -> list[dict[str, Any]]:
        """The loaded models, most recently used first."""
        with self._lock:
            models = sorted(self._models.values(), key=lambda m: -m.last_used)
        return [m.info() for m in models]

    def _runner_exited(self, runner: RunnerProcess) -> None:
        with self._lock:
            loaded = self._with_runner(runner.name)
            crashed = loaded is not None and loaded.runner is runner
            if loaded is not None and crashed:
                del self._models[loaded.key]
        if crashed:
            self.metrics.add(runner_crashes=1)

    # -- keep-alive ----------------------------------------------------------------------------------

    def schedule_expiry(self, loaded: LoadedModel) -> None:
        """Set when an idle model unloads (none while requests are on it, or when kept forever)."""
        if loaded.runner.active:
            loaded.expires_at = None
        elif loaded.keep_alive < 0:
            loaded.expires_at = None  # forever
        else:
            loaded.expires_at = self.clock() + loaded.keep_alive
        self._wake.set()

    def _reap(self) -> None:
        """The keep-alive thread: sleeps until the next model is due (or a deadline changes), then reaps."""
        while not self._closed.is_set():
            self._wake.wait(self._until_due())
            self._wake.clear()
            self.reap()

    def _until_due(self) -> float:
        with self._lock:
            # a model in use is due only when its requests end, which wakes the reaper itself
            deadlines = [m.expires_at for m in self._models.values() if m.expires_at is not None and m.idle]
        if not deadlines:
            return REAP_IDLE_SECONDS
        wait = float(min(deadlines) - self.clock())
        return min(max(wait, REAP_MIN_SECONDS), REAP_IDLE_SECONDS)

    def reap(self) -> list[str]:
        """Unload every idle model whose keep-alive has run out by the clock; their names."""
        now = self.clock()
        with self._lock:
            due = [
                m
                for m in self._models.values()
                if m.expires_at is not None and m.expires_at <= now and m.idle
            ]
        # closing one can take seconds: each is checked again as it comes
        return [m.name for m in due if self._unload(m, evicted=False, only_idle=True, due_by=now)]

    def _request_finished(self, handle: RequestHandle, item: Chunk | CandorError | None) -> None:
        """Called once per request (by a reader thread, or by cancel) when it ends."""
        if isinstance(item, CandorError):
            self.metrics.add(requests_failed=1)
        elif item is None:
            self.metrics.add(requests_cancelled=1)
        elif item.usage is not None and item.timings is not None:
            self.metrics.add(
                prompt_tokens=item.usage.prompt_tokens,
                prompt_tokens_cached=item.usage.cached_tokens,
                completion_tokens=item.usage.completion_tokens,
                time_to_first_token_seconds=item.timings.prompt_seconds,
                decode_seconds=item.timings.decode_seconds,
            )
        with self._lock:
            loaded = self._with_runner(handle.model)
        if loaded is not None:
            loaded.last_used = time.monotonic()
            self.schedule_expiry(loaded)

    # -- requests' view -------------------------------------------------------------------------

    @contextlib.contextmanager
    def claim(
        self, model: str | None, *, ctx: int | None = None, keep_alive: float | None = None
    ) -> Iterator[tuple[LoadedModel, float]]:
        """Load the model and keep the keep-alive reaper and eviction off it until this request is in its
        runner's hands (which then counts it as active). With `keep_alive: 0` a model is due at once, and
        the reaper used to be able to close it between the load and the hand-over.

        A request that fails before its runner takes it (a template error, a full queue) still leaves the
        model's keep-alive in force: `keep_alive: 0` unloads it even then. Yields the model and the seconds
        spent waiting for it (a load, or another request's load of it; near 0 when it was up)."""
        started = time.perf_counter()
        loaded = self.load(model, ctx=ctx, keep_alive=keep_alive, claim=True)
        try:
            yield loaded, time.perf_counter() - started
        except BaseException:
            self.schedule_expiry(loaded)
            raise
        finally:
            with self._lock:
                loaded.claims -= 1
            self._wake.set()  # the reaper looks again: a failed request's model may be due

    def entry_for(self, model: str | None, loaded: LoadedModel) -> StoreEntry | None:
        """The store entry this request named: its system prompt and parameters apply, even when the
        runner was loaded under another name of the same file."""
        if model is None:
            return loaded.entry
        return self.store.find(model)

    def defaults(self, model: str | None, *, chat: bool = False) -> SamplingParams:
        """The sampling defaults a name carries (an imported Ollama model's parameters), and with `chat`
        its chat format's. Loads nothing: the server calls it on its event loop."""
        key, path, entry = self._key(model)
        if not chat:
            return defaults_of(entry)
        with self._lock:
            loaded = self._models.get(key)
        if loaded is not None:
            return defaults_of(entry, loaded.chat_format)
        card = checked_card(path)  # not loaded (yet, or any more): the file's header says
        return defaults_of(entry, chat_format_of(card))

    def close(self) -> None:
        """Unload everything and stop the keep-alive thread."""
        self._closed.set()
        self._wake.set()
        with self._lock:
            models = list(self._models.values())
        for loaded in models:
            self._unload(loaded, evicted=False)
        self._reaper.join(2)
