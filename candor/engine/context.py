"""A llama.cpp context: the KV cache and compute buffers that run one model."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp

from candor.engine.checkpoints import CHECKPOINTS_PER_SEQUENCE, SWA_FULL, Checkpoint, CheckpointStore
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
    # Sliding-window layers keep the whole context (llama.cpp's C default), or only the window, with
    # checkpoints of it to reuse prefixes past the window (candor's choice: see engine/checkpoints.py).
    swa_full: bool = SWA_FULL
    # Checkpoints kept per sequence, at most (0: none); used only with a small sliding-window cache.
    checkpoints: int = CHECKPOINTS_PER_SEQUENCE


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
        # Recurrent and hybrid models keep llama.cpp's default: their partial states are not checkpointed.
        stateful = model.is_recurrent or model.is_hybrid
        params.swa_full = config.swa_full or stateful
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
        small_window = model.n_swa > 0 and not params.swa_full and not config.embeddings
        self.checkpoints: CheckpointStore | None = (
            CheckpointStore(config.checkpoints) if small_window and config.checkpoints > 0 else None
        )

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
        if self.checkpoints is not None:
            self.checkpoints.drop_from(seq_id, start)
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1))

    def reuse_prefix(self, seq_id: int, held: list[int], prompt: Sequence[int], *, minimum: int = 1) -> int:
        """Keep the KV of the longest prefix `held` shares with `prompt`, drop the rest; return its length.

        `held` (the tokens this sequence's KV holds, by position) is trimmed to match. The prompt's last
        token is always decoded again, since its logits are needed. When a small sliding-window cache no
        longer holds the window before that prefix, the newest checkpoint that can serve it is restored
        and the prefix is cut back to it (see Checkpoint.resumes_at). A prefix shorter than `minimum` is
        dropped too.
        """
        keep = min(common_prefix(held, prompt), len(prompt) - 1)
        least = max(1, minimum)
        if keep >= least:
            # The next token, at position `keep`, attends to the sliding-window positions from here on.
            earliest = self.earliest_position(seq_id)
            if 0 <= earliest <= self._window_start(keep) and self.forget(seq_id, keep):
                del held[keep:]
                return keep
            restored = self._restore_checkpoint(seq_id, keep, least)
            if restored:
                del held[restored:]
                return restored
        self.forget(seq_id, 0)
        held.clear()
        return 0

    def _window_start(self, position: int) -> int:
        """The first position a token at `position` attends to in the sliding-window layers."""
        n_swa = self.model.n_swa
        return max(0, position - n_swa + 1) if n_swa > 0 else 0

    def checkpoint(self, seq_id: int) -> None:
        """Save a sequence's sliding-window cells, when this context keeps checkpoints (after a prompt)."""
        store = self.checkpoints
        if store is None:
            return
        end = int(llama_cpp.llama_memory_seq_pos_max(self.memory, seq_id)) + 1
        if end <= 0:
            return
        flags = llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        size = int(llama_cpp.llama_state_seq_get_size_ext(self.handle, seq_id, flags))
        if size <= 0:
            return
        data = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data_ext(self.handle, data, size, seq_id, flags))
        if written == size:
            store.add(seq_id, Checkpoint(end, data, size))

    def _restore_checkpoint(self, seq_id: int, keep: int, least: int) -> int:
        """Put back the newest checkpoint that serves a `keep`-token prefix; where reading resumes, or 0."""
        store = self.checkpoints
        found = store.best(seq_id, keep) if store is not None else None
        if found is None or found[1] < least:
            return 0
        checkpoint, resume = found
        # The full-attention layers still hold the prefix; the window now holds end - n_swa .. end - 1.
        if not self.restore_window(seq_id, checkpoint.data, checkpoint.size):
            return 0
        if not self.forget(seq_id, resume):
            return 0
        earliest = self.earliest_position(seq_id)
        return resume if 0 <= earliest <= self._window_start(resume) else 0

    def restore_window(self, seq_id: int, data: ctypes.Array[ctypes.c_uint8], size: int) -> bool:
        """Put a saved window back into a sequence's sliding-window cells (the other layers keep theirs)."""
        flags = llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        return int(llama_cpp.llama_state_seq_set_data_ext(self.handle, data, size, seq_id, flags)) == size

    def earliest_position(self, seq_id: int) -> int:
        """The smallest position still held for a sequence (-1 when empty)."""
        return int(llama_cpp.llama_memory_seq_pos_min(self.memory, seq_id))

    def clear(self) -> None:
        """Empty the whole KV cache."""
        if self.checkpoints is not None:
            self.checkpoints.clear()
        llama_cpp.llama_memory_clear(self.memory, True)

    def logits(self, output_index: int) -> ctypes.Array[ctypes.c_float]:
        """The logits row of the i-th output of the last decode."""
        return llama_cpp.llama_get_logits_ith(self.handle, output_index)  # type: ignore[no-any-return]
