"""The library API: load a model, then generate, chat, embed, rerank and tokenize with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

from candor.config import Settings
from candor.engine import ContextConfig, Embedder, NativeContext, NativeModel, Reranker, SequenceRunner
from candor.engine.cpu_selftest import CpuBuffers, choose_cpu_buffers
from candor.errors import CandorError, InvalidParameter
from candor.gguf_file import read_gguf
from candor.identity import ModelCard, not_a_reranker
from candor.parameters import sampling_defaults
from candor.plan import (
    GENERATION_CHECKPOINTS,
    GENERATION_SWA_FULL,
    available_memory,
    hold_weights,
    memory_plan,
)
from candor.plan.context_size import ContextChoice, chosen_context, default_budget, fit_context
from candor.preflight import checked_card
from candor.prompt import ChatFormat, choose_chat_format, render_chat, with_default_system
from candor.store import Store, StoreEntry
from candor.types import (
    Chunk,
    ChunkStream,
    Completion,
    FinishReason,
    Message,
    SamplingParams,
    Timings,
    TokenLogprob,
    Usage,
)


class Model:
    """A loaded GGUF model. Use as a context manager, or call close(), to free its native memory."""

    def __init__(
        self,
        path: Path,
        *,
        ctx: int | None,
        threads: int,
        batch: int,
        gpu_layers: int,
        entry: StoreEntry | None = None,
        load_mode: str = "auto",
        cpu_buffers: str = "auto",
        home: Path | None = None,
    ) -> None:
        started = time.perf_counter()
        self.path = path
        self.entry = entry  # the store entry this was loaded by name from, if any
        # A store entry may carry defaults (an Ollama model's `system` and `params` layers).
        self.system: str | None = entry.system if entry else None
        parameters = entry.parameters if entry else {}
        self.defaults: SamplingParams = sampling_defaults(parameters)  # for generate()
        self.card: ModelCard = checked_card(path)  # a malformed file never reaches llama.cpp
        # In this process glibc's huge pages cannot be asked for any more (a runner's environment asks at
        # exec); reading the weights into memory still beats mapping them (see plan/holding.py).
        in_ram, _ = hold_weights(load_mode, path.stat().st_size, available_memory())
        home = home or Settings.from_env().home
        self.cpu_buffers: CpuBuffers = choose_cpu_buffers(cpu_buffers, home, threads=threads)
        self._native = NativeModel(
            path, gpu_layers=gpu_layers, weights_in_ram=in_ram, cpu_buffers=self.cpu_buffers
        )
        try:
            self.context: ContextChoice = self._size_context(ctx, batch)
            n_ctx = self.context.per_slot
            config = ContextConfig(n_ctx=n_ctx, n_batch=min(batch, n_ctx), n_threads=threads, n_outputs_max=1)
            self._runner = SequenceRunner(NativeContext(self._native, config))
        except BaseException:
            self._native.close()
            raise
        self._threads = threads
        self._embedder: Embedder | None = None
        self._reranker: Reranker | None = None
        self._lock = threading.Lock()
        self.chat_format: ChatFormat = choose_chat_format(
            self._native.chat_template(), self.card.architecture, self.card.special_tokens_present
        )
        # chat() starts from the format's defaults (a model without a template is bounded), then the entry's.
        self.chat_defaults: SamplingParams = sampling_defaults(parameters, self.chat_format.options)
        self.load_seconds = time.perf_counter() - started
        self._load_seconds_unreported = self.load_seconds

    def _size_context(self, asked: int | None, batch: int) -> ContextChoice:
        """As asked (capped at the training context), else the longest one sequence fits in the budget."""
        trained = self._native.n_ctx_train if self._native.n_ctx_train > 0 else None
        chosen = chosen_context(asked, trained)
        if chosen is not None:
            return chosen
        header = read_gguf(self.path)  # only to plan: the auto context weighs plans of several lengths
        return fit_context(
            trained,
            lambda n: (
                memory_plan(
                    self.card,
                    ctx=n,
                    n_batch=min(batch, n),
                    n_outputs_max=1,
                    swa_full=GENERATION_SWA_FULL,
                    checkpoints=GENERATION_CHECKPOINTS,
                    extra_buffers=self.cpu_buffers.extra,
                    header=header,
                ).total
            ),
            default_budget(),
        )

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """The context window, in tokens."""
        return self._runner.context.n_ctx

    def close(self) -> None:
        """Free the model's native memory (idempotent)."""
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._reranker is not None:
            self._reranker.close()
            self._reranker = None
        self._runner.context.close()
        self._native.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- tokens --------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Text -> token ids (with the model's BOS when it wants one).

        Args:
            text: the text to tokenize.
            add_special: add BOS/EOS as the model's tokenizer is configured to.
            parse_special: read `<start_of_turn>`-style text as control tokens.
        Returns:
            The token ids.
        """
        return self._native.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids -> text."""
        return self._native.detokenize(list(tokens))

    # -- generation ----------------------------------------------------------------------------------

    @overload
    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        stream: Literal[True] = ...,
        params: SamplingParams | None = ...,
        **overrides: Any,
    ) -> ChunkStream: ...

    @overload
    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        stream: Literal[False],
        params: SamplingParams | None = ...,
        **overrides: Any,
    ) -> Completion: ...

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        stream: bool = True,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> ChunkStream | Completion:
        """Continue raw text (no chat template).

        Args:
            prompt: text, or token ids to feed as they are.
            stream: yield Chunks as tokens are decoded (True) or return one Completion (False).
            params: sampling settings (default: `defaults`); keyword overrides (temperature=0,
                max_tokens=50...) apply on top.
        Returns:
            An iterator of Chunks whose last one carries finish_reason, usage and timings, or a Completion.
        """
        if isinstance(prompt, str):
            tokens = self._native.tokenize(prompt, add_special=True, parse_special=False)
        else:
            tokens = [int(t) for t in prompt]
        chunks = self._stream(tokens, self._params(params, overrides), ())
        return chunks if stream else collect(chunks)

    @overload
    def chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        *,
        stream: Literal[True] = ...,
        params: SamplingParams | None = ...,
        **overrides: Any,
    ) -> ChunkStream: ...

    @overload
    def chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        *,
        stream: Literal[False],
        params: SamplingParams | None = ...,
        **overrides: Any,
    ) -> Completion: ...

    def chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        *,
        stream: bool = True,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> ChunkStream | Completion:
        """Answer a conversation through the model's chat template (or its disclosed fallback).

        Args:
            messages: Message objects or {"role", "content"} dicts, oldest first.
            stream: yield Chunks (True) or return one Completion (False).
            params: sampling settings (default: `chat_defaults`); keyword overrides apply on top.
        Returns:
            An iterator of Chunks whose last one carries finish_reason, usage and timings, or a Completion.
        """
        tokens = self.chat_tokens(messages)
        chosen = self._params(params if params is not None else self.chat_defaults, overrides)
        chunks = self._stream(tokens, chosen, self.chat_format.stop)
        return chunks if stream else collect(chunks)

    def chat_tokens(self, messages: Sequence[Message | Mapping[str, Any]]) -> list[int]:
        """Render a conversation with the chat format and tokenize it, BOS included exactly once."""
        native = self._native
        turns = with_default_system(messages, self.system)
        text = render_chat(
            self.chat_format,
            turns,
            bos_token=native.token_text(native.bos) if native.bos >= 0 else "",
            eos_token=native.token_text(native.eos) if native.eos >= 0 else "",
        )
        tokens = native.tokenize(text, add_special=True, parse_special=True)
        # Templates usually write bos_token themselves and the tokenizer adds another: keep one.
        if len(tokens) >= 2 and tokens[0] == tokens[1] == native.bos:
            del tokens[0]
        return tokens

    def embed(self, texts: str | Sequence[str]) -> list[list[float]]:
        """Embed texts: one L2-normalised vector per text (mean pooling unless the model declares one)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        with self._exclusive():
            if self._embedder is None:
                self._embedder = Embedder(self._native, n_ctx=self.n_ctx, n_threads=self._threads)
            embedder = self._embedder
            return [
                embedder.embed_tokens(self._native.tokenize(t, add_special=True, parse_special=False))
                for t in items
            ]

    def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        """Score documents against a query with a reranker (a GGUF declaring rank pooling or with a
        classifier head: Qwen3-Reranker, bge-reranker).

        Args:
            query: what the documents are ranked for.
            documents: the texts to score.

        Returns:
            One score per document, in order: the model's raw score, higher is more relevant.
        """
        if isinstance(documents, str):
            raise InvalidParameter("rerank takes the documents as a list of strings")
        if not self.card.is_reranker:
            raise not_a_reranker(self._native.path.name, self.card.pooling_type)
        with self._exclusive():
            if self._reranker is None:
                self._reranker = Reranker(self._native, n_ctx=self.n_ctx, n_threads=self._threads)
            reranker = self._reranker
            return [reranker.score_tokens(reranker.pair_tokens(query, d)) for d in documents]

    # -- internals -----------------------------------------------------------------------------------

    def _params(self, params: SamplingParams | None, overrides: Mapping[str, Any]) -> SamplingParams:
        base = params if params is not None else self.defaults
        return base.with_overrides(**overrides) if overrides else base

    def _exclusive(self) -> _Exclusive:
        return _Exclusive(self._lock)

    def _stream(self, tokens: list[int], params: SamplingParams, extra_stop: Sequence[str]) -> ChunkStream:
        self._runner.check_fits(tokens)  # fail at the call, not at the first next()
        return self._locked_stream(tokens, params, extra_stop)

    def _locked_stream(
        self, tokens: list[int], params: SamplingParams, extra_stop: Sequence[str]
    ) -> ChunkStream:
        with self._exclusive():
            load_seconds, self._load_seconds_unreported = self._load_seconds_unreported, 0.0
            for chunk in self._runner.generate(tokens, params, extra_stop=extra_stop):
                if chunk.timings is not None and load_seconds:
                    # replace() keeps every other field: the final chunk's logprobs too
                    chunk = replace(chunk, timings=replace(chunk.timings, load_seconds=load_seconds))
                yield chunk


class _Exclusive:
    """One generation at a time per model: a second concurrent call fails fast instead of waiting."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise CandorError(
                "this model is already generating; finish or close the other stream first "
                "(concurrent requests are served by the batching scheduler of `candor serve`)"
            )

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def collect(chunks: Iterator[Chunk]) -> Completion:
    """Drain a chunk stream into one Completion."""
    parts: list[str] = []
    tokens: list[int] = []
    logprobs: list[TokenLogprob] = []
    finish: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    for chunk in chunks:
        parts.append(chunk.text)
        tokens.extend(chunk.tokens)
        logprobs.extend(chunk.logprobs)
        finish, usage, timings = chunk.finish_reason or finish, chunk.usage or usage, chunk.timings or timings
    if finish is None or usage is None or timings is None:
        raise CandorError("the generation ended without a final chunk")
    return Completion("".join(parts), finish, usage, timings, tuple(tokens), tuple(logprobs))


def load(
    model: str | Path | None = None,
    *,
    ctx: int | None = None,
    threads: int | None = None,
    gpu_layers: int | None = None,
    settings: Settings | None = None,
) -> Model:
    """Load a model by path or name (None: the embedded default model).

    Args:
        model: a store name (`candor list`), a .gguf path, or None for the default model.
        ctx: context window in tokens (default CANDOR_CTX, capped at what the model was trained for).
        threads: CPU threads (default: physical cores).
        gpu_layers: layers to offload when a GPU backend is built in (-1: all, 0: none).
        settings: resolved settings (default: from the environment).
    Returns:
        A loaded Model; close it (or use `with`) to free native memory.
    """
    s = settings or Settings.from_env()
    for name, value in (("ctx", ctx), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidParameter(f"{name} must be a whole number of at least 1; got {value!r}")
    path, entry = Store(s).resolve(model)
    return Model(
        path,
        entry=entry,
        ctx=s.ctx if ctx is None else ctx,
        threads=s.threads if threads is None else threads,
        batch=s.batch,
        gpu_layers=s.gpu_layers if gpu_layers is None else gpu_layers,
        load_mode=s.load_mode,
        cpu_buffers=s.cpu_buffers,
        home=s.home,
    )
