"""The runner: the child process that owns one model and drives its batch loop.

It lives in its own process so that a native abort in llama.cpp (a GGML_ASSERT on a bad file) kills only
this runner; the scheduler reports it to the requests that were on it and can load the model again.
"""

from __future__ import annotations

import select
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from candor.engine import ContextConfig, Embedder, NativeModel, Reranker
from candor.engine.batching import BatchEngine, EngineEvent, EngineRequest
from candor.errors import CandorError, InvalidParameter
from candor.identity import NO_KV_ARCHS
from candor.pipeline.request import Infill
from candor.scheduler.placement import place
from candor.scheduler.protocol import (
    Cancel,
    Detokenize,
    Embed,
    Embedded,
    Events,
    Generate,
    Ready,
    Rerank,
    Reranked,
    Result,
    RunnerConfig,
    Shutdown,
    Tokenize,
    pack_error,
)
from candor.types import SamplingParams

# Replies leave at most every FLUSH_INTERVAL while the engine is busy, or every FLUSH_STEPS steps when steps
# are slower (many streams), never later than FLUSH_MAX: fewer, fuller updates leave more of the cores the
# server process shares with llama.cpp's threads to llama.cpp (docs/performance.md has the measurements).
FLUSH_INTERVAL = 0.025  # seconds
FLUSH_STEPS = 2
FLUSH_MAX = 0.1
# An idle runner that gets a request waits up to GATHER_QUIET for another, and so on up to GATHER_MAX in
# all, before its first step. Clients that start together reach the runner one by one while the server
# parses them; started alone, the first would hold the others for a whole step, and they would then
# prefill in a step llama.cpp splits into many passes (one KV stream per slot). Gathered, they prefill
# together, and the server has the cores while it parses (docs/performance.md: time to first token).
GATHER_QUIET = 0.004  # seconds
GATHER_MAX = 0.03


class Runner:
    """One model, one batch engine, one connection to the scheduler."""

    def __init__(self, config: RunnerConfig, conn: Connection) -> None:
        self.config = config
        self.conn = conn
        # Replies wait here and leave together, at most every FLUSH_INTERVAL while the engine is busy: on a
        # machine whose cores all run llama.cpp's threads, every wake-up of the scheduler delays a step.
        self._outbox: list[Any] = []
        self._last_flush = 0.0
        self._step_seconds = 0.0  # a moving average of the engine's step time
        self._started: set[int] = set()  # requests whose first text went out
        # One poll object for the life of the runner: Connection.poll() builds a selector on every call.
        self._pending: Callable[[], bool] = lambda: conn.poll(0)
        self._arrives: Callable[[float], bool] = conn.poll
        if hasattr(select, "poll"):  # not on Windows
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            self._pending = lambda: bool(poller.poll(0))
            self._arrives = lambda seconds: bool(poller.poll(seconds * 1000))
        started = time.perf_counter()
        placement = place(config)
        self.model = NativeModel(
            Path(config.path),
            gpu_layers=placement.gpu_layers,
            weights_in_ram=placement.weights_in_ram,
            cpu_buffers=placement.cpu_buffers,
        )
        ctx = min(config.ctx, self.model.n_ctx_train) if self.model.n_ctx_train > 0 else config.ctx
        context = ContextConfig(
            n_ctx=ctx * config.parallel,
            n_batch=min(config.batch, ctx),
            n_threads=config.threads,
            n_seq_max=config.parallel,
            kv_type=config.kv_type,
            n_outputs_max=config.parallel,
            # One KV stream per slot (ctx cells each): a sequence attends over its own cells only, and no
            # request can starve another of cache. A unified pool keeps mixed prompt/decode steps in one
            # pass over the weights (llama.cpp splits a batch over streams into runs of consecutive sequence
            # ids with equal token counts), but every token then attends over the other slots' cached
            # cells: a 1,000-token prompt took 1.6 s instead of 1.1 s beside 8 idle chats.
            kv_unified=False,
        )
        self.engine = BatchEngine(self.model, context, max_request_tokens=ctx)
        # A model that cannot generate, or needs its encoder run first, has nothing to warm.
        if self.model.architecture not in NO_KV_ARCHS and not self.model.has_encoder:
            self.engine.warm_up()
        self.embedder: Embedder | None = None
        self.reranker: Reranker | None = None
        self.ready = Ready(
            n_ctx=self.engine.context.n_ctx,
            max_request_tokens=self.engine.max_request_tokens,
            parallel=config.parallel,
            bos_text=self.model.token_text(self.model.bos) if self.model.bos >= 0 else "",
            eos_text=self.model.token_text(self.model.eos) if self.model.eos >= 0 else "",
            load_seconds=time.perf_counter() - started,
            gpu_layers=placement.gpu_layers,
            placement=placement.decided_by,
            host_bytes=placement.host_bytes,
            gpu_bytes=placement.gpu_bytes,
            weights=placement.weights,
            cpu_buffers=placement.cpu_buffers.why,
        )

    def _detokenize(self, message: Detokenize) -> str | list[bytes] | tuple[str, str]:
        bad = [t for t in message.tokens if not 0 <= t < self.model.n_vocab]
        if bad:  # llama.cpp indexes its vocabulary with them unchecked
            error = InvalidParameter(f"token ids must be from 0 to {self.model.n_vocab - 1}; got {bad[:5]}")
            return pack_error(error)
        if message.pieces:
            return [self.model.piece(t) for t in message.tokens]
        return self.model.detokenize(list(message.tokens))

    def _infill_tokens(self, infill: Infill, prompt: str) -> tuple[int, ...]:
        """llama.cpp's prefix-suffix-middle order: [extra files] PRE prefix SUF suffix MID prompt."""
        fim = self.model.fim_tokens()
        if fim is None:
            raise InvalidParameter(
                f"{self.config.path} has no fill-in-the-middle tokens; use a code model made for infill "
                "(Qwen2.5-Coder, CodeLlama, StarCoder2...)"
            )
        pre, suf, mid, sep = fim

        def text(value: str) -> list[int]:
            return self.model.tokenize(value, add_special=False, parse_special=False)

        tokens = [self.model.bos] if self.model.adds_bos and self.model.bos >= 0 else []
        for name, body in infill.extra:  # other files, as llama-server gives them: a separator and a name
            tokens += ([sep] if sep >= 0 else []) + text(f"{name}\n{body}\n")
        tokens += [pre, *text(infill.prefix), suf, *text(infill.suffix), mid, *text(prompt)]
        return tuple(tokens)

    def tokens_for(self, message: Generate) -> tuple[int, ...]:
        """The prompt of a Generate, tokenized here; BOS appears once even if a template wrote it too."""
        if message.tokens is not None:
            return message.tokens
        if message.infill is not None:
            return self._infill_tokens(message.infill, message.text or "")
        tokens = self.model.tokenize(
            message.text or "", add_special=True, parse_special=message.parse_special
        )
        if len(tokens) >= 2 and tokens[0] == tokens[1] == self.model.bos:
            del tokens[0]
        return tuple(tokens)

    def handle(self, message: Any) -> bool:
        """Act on one message; False on Shutdown."""
        if isinstance(message, Generate):
            try:
                request = EngineRequest(
                    message.id,
                    self.tokens_for(message),
                    message.params,
                    message.extra_stop,
                    message.thinking_budget,
                )
                event = self.engine.submit(request)
            except CandorError as exc:
                event = EngineEvent(message.id, error=exc)
            if event is not None:
                self.send_events([event])
                self.flush(force=True)
        elif isinstance(message, Cancel):
            self.engine.cancel(message.id)
            self._started.discard(message.id)
        elif isinstance(message, Embed):
            self._outbox.append(Result(message.id, self._embed(message.texts)))
            self.flush(force=True)
        elif isinstance(message, Rerank):
            self._outbox.append(Result(message.id, self._rerank(message)))
            self.flush(force=True)
        elif isinstance(message, Detokenize):
            self._outbox.append(Result(message.id, self._detokenize(message)))
            self.flush(force=True)
        elif isinstance(message, Tokenize):
            if message.as_prompt:
                prompt = Generate(message.id, SamplingParams(), text=message.text, parse_special=True)
                tokens = list(self.tokens_for(prompt))
            else:
                tokens = self.model.tokenize(
                    message.text, add_special=message.add_special, parse_special=message.parse_special
                )
            self._outbox.append(Result(message.id, tokens))
            self.flush(force=True)
        elif isinstance(message, Shutdown):
            return False
        return True

    def _embed(self, texts: tuple[str, ...]) -> Embedded | tuple[str, str]:
        try:
            if self.embedder is None:
                self.embedder = Embedder(
                    self.model, n_ctx=self.engine.max_request_tokens, n_threads=self.config.threads
                )
            embedder = self.embedder
            prompts = [self.model.tokenize(t, add_special=True, parse_special=False) for t in texts]
            return Embedded([embedder.embed_tokens(p) for p in prompts], sum(len(p) for p in prompts))
        except CandorError as exc:
            return pack_error(exc)

    def _rerank(self, message: Rerank) -> Reranked | tuple[str, str]:
        try:
            if self.reranker is None:
                self.reranker = Reranker(
                    self.model, n_ctx=self.engine.max_request_tokens, n_threads=self.config.threads
                )
            reranker = self.reranker
            pairs = [reranker.pair_tokens(message.query, d) for d in message.documents]
            return Reranked([reranker.score_tokens(p) for p in pairs], sum(len(p) for p in pairs))
        except CandorError as exc:
            return pack_error(exc)

    def send_events(self, events: list[EngineEvent]) -> None:
        """Forward one step's events."""
        self._outbox.append(
            Events(tuple((e.request_id, e.chunk, pack_error(e.error) if e.error else None) for e in events))
        )

    def flush(self, *, force: bool = False) -> None:
        """Send what is waiting, if forced or if the last send was long enough ago."""
        now = time.monotonic()
        interval = min(FLUSH_MAX, max(FLUSH_INTERVAL, FLUSH_STEPS * self._step_seconds))
        if self._outbox and (force or now - self._last_flush >= interval):
            self.conn.send(self._outbox)
            self._outbox = []
            self._last_flush = now

    def _gather(self) -> bool:
        """The engine just got work while idle: take what else arrives within the gather window.

        False on Shutdown."""
        deadline = time.monotonic() + GATHER_MAX
        # Once every slot has a request, nothing else could start in the first step: start it.
        while self.engine.free_slots and time.monotonic() < deadline and self._arrives(GATHER_QUIET):
            if not self.handle(self.conn.recv()):
                return False
        return True

    def serve(self) -> None:
        """Read messages; step the engine while it has work; block on the connection when it has none."""
        conn, engine = self.conn, self.engine
        while True:
            if not engine.busy:
                self.flush(force=True)
            if not engine.busy or self._pending():
                idle = not engine.busy
                if not self.handle(conn.recv()):
                    return
                if idle and engine.busy and not self._gather():
                    return
                continue
            started = time.monotonic()
            events = engine.step()
            self._step_seconds += 0.2 * (time.monotonic() - started - self._step_seconds)
            if not events:
                self.flush()  # text held back earlier still leaves within the interval
            else:
                self.send_events(events)
                # A request's first and last chunks go out at once: time to first token, and the slot's end.
                self.flush(force=any(e.final or e.request_id not in self._started for e in events))
                # A request counts as started once it has sent text: time to first token is to first text.
                self._started.update(e.request_id for e in events if e.chunk is not None and e.chunk.text)
                self._started.difference_update(e.request_id for e in events if e.final)


def run_runner(config: RunnerConfig, conn: Connection) -> None:
    """Child process entry point: load, say Ready (or why not), then serve until Shutdown or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        runner = Runner(config, conn)
    except CandorError as exc:
        conn.send(pack_error(exc))
        return
    conn.send(runner.ready)
    try:
        runner.serve()
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the scheduler went away
    finally:
        runner.engine.close()
        if runner.embedder is not None:
            runner.embedder.close()
        if runner.reranker is not None:
            runner.reranker.close()
        runner.model.close()
