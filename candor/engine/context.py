"""A llama.cpp context: the KV cache and compute buffers that run one model."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp

from candor.engine.native import ensure_backend
from candor.engine.native_model import NativeModel
from candor.errors import EngineError, ModelClosed, ModelLoadError

# llama_decode return codes (llama.h)
DECODE_OK = 0
DECODE_NO_KV_SLOT = 1


# KV cache element types a user may choose (ggml_type ids): full precision, or quantized to save memory.
KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


@dataclass(frozen=True)
class ContextConfig:
    """How a context is sized. With several sequences the KV cache is unified: one pool of n_ctx cells."""

    n_ctx: int
    n_batch: int = 512
    n_threads: int = 2
    n_seq_max: int = 1
    embeddings: bool = False
    kv_type: str = "f16"
    kv_unified: bool = True
    # Logits rows one decode may return; 0 is llama.cpp's default (n_batch). Generation needs one per
    # sequence, and sizing for that shrinks the compute buffer (514 -> 26 MiB for Gemma's 262k vocabulary).
    n_outputs_max: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest shared prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Batch:
    """A reusable `llama_batch` that holds up to `capacity` tokens."""

    def __init__(self, capacity: int, n_seq_max: int = 1) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, n_seq_max)
        self.n_tokens = 0

    def clear(self) -> None:
        """Empty the batch for the next step."""
        self.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, wants_logits: bool) -> None:
        """Append one token of one sequence."""
        i = self.n_tokens
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq_id
        raw.logits[i] = wants_logits
        self.n_tokens = i + 1

    def free(self) -> None:
        """Release the native arrays (idempotent)."""
        if self.capacity:
            llama_cpp.llama_batch_free(self.raw)
            self.capacity = 0


class NativeContext:
    """Owns a `llama_context*` and the batch that feeds it."""

    def __init__(self, model: NativeModel, config: ContextConfig, *, pooling_type: int = -1) -> None:
        sink = ensure_backend()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.n_ctx
        params.n_batch = config.n_batch
        params.n_ubatch = config.n_batch
        params.n_seq_max = config.n_seq_max
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        params.embeddings = config.embeddings
        params.kv_unified = config.kv_unified
        params.n_outputs_max = config.n_outputs_max
        params.type_k = params.type_v = KV_TYPES[config.kv_type]
        params.pooling_type = pooling_type
        params.no_perf = True
        mark = sink.mark()
        handle = llama_cpp.llama_init_from_model(model.handle, params)
        if not handle:
            reasons = "; ".join(sink.errors_since(mark)[-3:]) or "no reason was logged"
            raise ModelLoadError(
                f"llama.cpp could not create a context of {config.n_ctx} tokens for {model.path}: "
                f"{reasons}. Try a smaller context (--ctx)."
            )
        self._handle: int | None = handle
        self.model = model
        self.config = config
        self.n_ctx: int = llama_cpp.llama_n_ctx(handle)
        self.memory = llama_cpp.llama_get_memory(handle)
        self.batch = Batch(config.n_batch, config.n_seq_max)

    @property
    def handle(self) -> int:
        """The raw `llama_context*`; raises once closed."""
        if self._handle is None:
            raise ModelClosed("this model was closed; load it again with candor.load()")
        return self._handle

    def close(self) -> None:
        """Free the KV cache and buffers (idempotent)."""
        self.batch.free()
        if self._handle is not None:
            llama_cpp.llama_free(self._handle)
            self._handle = None

    def decode(self) -> int:
        """Run the model on the current batch; 0 on success, 1 when the KV cache has no room."""
        raw = self.batch.raw
        raw.n_tokens = self.batch.n_tokens
        status = int(llama_cpp.llama_decode(self.handle, raw))
        if status not in (DECODE_OK, DECODE_NO_KV_SLOT):
            raise EngineError(f"llama_decode failed with status {status}; the model state was reset")
        return status

    def forget(self, seq_id: int, start: int = 0) -> bool:
        """Drop a sequence's KV from position `start` on; False if the cache cannot cut there."""
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1))

    def reuse_prefix(self, seq_id: int, held: list[int], prompt: Sequence[int], *, minimum: int = 1) -> int:
        """Keep the KV of the longest prefix `held` shares with `prompt`, drop the rest; return its length.

        `held` (the tokens this sequence's KV holds, by position) is trimmed to match. The prompt's last
        token is always decoded again, since its logits are needed. A prefix shorter than `minimum` is
        dropped too.
        """
        keep = min(common_prefix(held, prompt), len(prompt) - 1)
        if keep >= max(1, minimum) and self.forget(seq_id, keep):
            # A sliding-window cache may already have dropped the positions the next token attends to.
            n_swa = self.model.n_swa
            window_start = max(0, keep - n_swa) if n_swa > 0 else 0
            if self.earliest_position(seq_id) <= window_start:
                del held[keep:]
                return keep
        self.forget(seq_id, 0)
        held.clear()
        return 0

    def earliest_position(self, seq_id: int) -> int:
        """The smallest position still held for a sequence (-1 when empty)."""
        return int(llama_cpp.llama_memory_seq_pos_min(self.memory, seq_id))

    def clear(self) -> None:
        """Empty the whole KV cache."""
        llama_cpp.llama_memory_clear(self.memory, True)

    def logits(self, output_index: int) -> ctypes.Array[ctypes.c_float]:
        """The logits row of the i-th output of the last decode."""
        return llama_cpp.llama_get_logits_ith(self.handle, output_index)  # type: ignore[no-any-return]
