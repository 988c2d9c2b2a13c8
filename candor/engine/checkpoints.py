"""Context checkpoints: saved copies of a sequence's sliding-window KV, so that a prefix can be reused after
the window has moved past it.

With llama.cpp's small sliding-window cache (swa_full off), the sliding-window layers keep only the last
n_swa positions (plus a micro-batch) of each sequence, so the KV of a prefix that ends further back is
gone from those layers: the full-attention layers still hold it, but the next token's window does not.
As llama-server does (--ctx-checkpoints, tools/server/server-context.cpp), the window is saved when a
prompt has been read (llama_state_seq_get_data_ext with LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY: the
sliding-window cells only) and put back when a later prompt shares that prompt as its prefix.

This module keeps the checkpoints and decides which one a prefix may use; NativeContext takes and
restores them. It imports no llama.cpp, so the memory plan can size them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# The context setting candor's generation contexts use: the small sliding-window cache, checkpointed.
SWA_FULL = False

# Checkpoints kept per sequence: one is taken per request, when its prompt has been read, so these are
# the last few turns' prompts; the newest is the one an agent loop's next turn uses.
CHECKPOINTS_PER_SEQUENCE = 4
# ...and at most this many bytes of them per sequence (at least the newest is kept): one is n_swa cells of
# every sliding-window layer, 7.5 MiB on the default model but hundreds of MiB on larger Gemma 3 models.
CHECKPOINT_BYTES_PER_SEQUENCE = 256 << 20


def checkpoints_kept(one: int, most: int = CHECKPOINTS_PER_SEQUENCE) -> int:
    """How many checkpoints of `one` bytes each a sequence keeps at most (0 when they are off)."""
    if most <= 0 or one <= 0:
        return 0
    return min(most, max(1, CHECKPOINT_BYTES_PER_SEQUENCE // one))


@dataclass(frozen=True)
class Checkpoint:
    """A sequence's sliding-window cells when it held positions [0, end): the last n_swa of them."""

    end: int
    data: Any  # the ctypes byte array llama_state_seq_get_data_ext filled
    size: int

    def resumes_at(self, keep: int) -> int:
        """Where reading may resume with this checkpoint restored, for a prefix of `keep` reusable tokens
        (-1: it cannot serve that prefix).

        A token at position p attends to the sliding-window positions p - n_swa + 1 .. p (llama.cpp's
        is_masked_swa: p - p0 >= n_swa is masked), and the checkpoint holds end - n_swa .. end - 1 (the
        cells state_write keeps: those unmasked for its last position). So reading may resume at `end`,
        or one before it (the last cell is then cut and its token read again, as llama-server always
        does): at min(keep, end) when keep >= end - 1.
        """
        return min(keep, self.end) if keep >= self.end - 1 else -1


class CheckpointStore:
    """The checkpoints of each sequence, oldest first, within a count and a byte bound per sequence."""

    def __init__(self, most: int = CHECKPOINTS_PER_SEQUENCE, max_bytes: int = CHECKPOINT_BYTES_PER_SEQUENCE):
        self.most = most
        self.max_bytes = max_bytes
        self._by_seq: dict[int, list[Checkpoint]] = {}

    def add(self, seq_id: int, checkpoint: Checkpoint) -> None:
        """Keep a new checkpoint, replacing one at the same end; drop the oldest past the bounds."""
        kept = [c for c in self._by_seq.get(seq_id, []) if c.end != checkpoint.end]
        kept.append(checkpoint)
        kept.sort(key=lambda c: c.end)
        while len(kept) > 1 and (len(kept) > self.most or sum(c.size for c in kept) > self.max_bytes):
            kept.pop(0)
        self._by_seq[seq_id] = kept

    def best(self, seq_id: int, keep: int) -> tuple[Checkpoint, int] | None:
        """The checkpoint that resumes closest to `keep`, and where; None without one."""
        for checkpoint in reversed(self._by_seq.get(seq_id, [])):
            at = checkpoint.resumes_at(keep)
            if at >= 0:
                return checkpoint, at
        return None

    def drop_from(self, seq_id: int, start: int) -> None:
        """A sequence's KV is cut at `start`: checkpoints of positions at or past it no longer match it."""
        kept = [c for c in self._by_seq.get(seq_id, []) if c.end <= start]
        if kept:
            self._by_seq[seq_id] = kept
        else:
            self._by_seq.pop(seq_id, None)

    def clear(self) -> None:
        """Drop every sequence's checkpoints."""
        self._by_seq.clear()

    def of(self, seq_id: int) -> list[Checkpoint]:
        """A sequence's checkpoints, oldest first."""
        return list(self._by_seq.get(seq_id, []))

    def __iter__(self) -> Iterator[Checkpoint]:
        for checkpoints in self._by_seq.values():
            yield from checkpoints

    @property
    def bytes(self) -> int:
        """Bytes held by all checkpoints."""
        return sum(c.size for c in self)
