"""The CPU self-test's model: a one-layer llama written on the fly, whose matrices every extra buffer type
of ggml-cpu (AMX, KleidiAI, CPU_REPACK) has a kernel for.

Shapes follow the strictest of them: AMX takes a matrix only when its rows are a multiple of 2 x its tile
width (32) and its row length a multiple of 256 for K-quants; repacking wants rows in multiples of 8. The
types cover what each one takes first: AMX takes Q4_0, Q4_K and Q8_0 ahead of the others, IQ4_NL only
reaches CPU_REPACK on x86, and KleidiAI takes Q4_0 and Q8_0 on ARM. The weights are arbitrary but finite:
the test is whether the kernels run, not what they compute.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

EMBED, FFN, HEADS, VOCAB, CONTEXT = 256, 512, 4, 256, 64

# ggml type id, block size (elements), bytes per block, and the bytes of one block around its quants
F32, Q4_0, Q8_0, Q4_K, IQ4_NL = 0, 2, 8, 12, 20
_HALF_SCALE = struct.pack("<e", 0.01)

# tensor name -> (ggml type, rows, row length); every matrix a llama layer multiplies by
MATRICES: dict[str, tuple[int, int, int]] = {
    "blk.0.attn_q.weight": (Q4_0, EMBED, EMBED),
    "blk.0.attn_k.weight": (Q4_K, EMBED, EMBED),
    "blk.0.attn_v.weight": (Q8_0, EMBED, EMBED),
    "blk.0.attn_output.weight": (IQ4_NL, EMBED, EMBED),
    "blk.0.ffn_gate.weight": (Q4_K, FFN, EMBED),
    "blk.0.ffn_up.weight": (Q4_0, FFN, EMBED),
    "blk.0.ffn_down.weight": (Q8_0, EMBED, FFN),
    "output.weight": (Q4_K, VOCAB, EMBED),
}
TYPE_NAMES = {F32: "F32", Q4_0: "Q4_0", Q8_0: "Q8_0", Q4_K: "Q4_K", IQ4_NL: "IQ4_NL"}


def _block(kind: int, rng: random.Random) -> bytes:
    if kind in (Q4_0, IQ4_NL):  # fp16 scale, 32 4-bit quants
        return _HALF_SCALE + rng.randbytes(16)
    if kind == Q8_0:  # fp16 scale, 32 int8 quants
        return _HALF_SCALE + rng.randbytes(32)
    if kind == Q4_K:  # fp16 scale and min, 12 bytes of 6-bit sub-block scales, 256 4-bit quants
        scales = bytes(b & 0x3F for b in rng.randbytes(12))
        return _HALF_SCALE + struct.pack("<e", 0.0) + scales + rng.randbytes(128)
    raise ValueError(f"no block layout for ggml type {kind}")


_BLOCK_SIZE = {Q4_0: 32, IQ4_NL: 32, Q8_0: 32, Q4_K: 256}


def _matrix(kind: int, rows: int, cols: int, rng: random.Random) -> bytes:
    return b"".join(_block(kind, rng) for _ in range(rows * cols // _BLOCK_SIZE[kind]))


def _f32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


class _Writer:
    """Just enough of GGUF version 3 for this model."""

    def __init__(self) -> None:
        self.kv: list[bytes] = []

    @staticmethod
    def _string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    def add(self, key: str, value: str | int | float | list[str] | list[float] | list[int]) -> None:
        head = self._string(key)
        if isinstance(value, str):
            self.kv.append(head + struct.pack("<I", 8) + self._string(value))
        elif isinstance(value, int):
            self.kv.append(head + struct.pack("<II", 4, value))
        elif isinstance(value, float):
            self.kv.append(head + struct.pack("<If", 6, value))
        elif value and isinstance(value[0], str):
            items = b"".join(self._string(str(v)) for v in value)
            self.kv.append(head + struct.pack("<IIQ", 9, 8, len(value)) + items)
        elif value and isinstance(value[0], float):
            self.kv.append(head + struct.pack("<IIQ", 9, 6, len(value)) + _f32([float(v) for v in value]))
        else:
            ints = struct.pack(f"<{len(value)}i", *[int(v) for v in value])
            self.kv.append(head + struct.pack("<IIQ", 9, 5, len(value)) + ints)


def write_selftest_model(path: Path, seed: int = 0) -> Path:
    """Write the self-test model to `path` (about 0.5 MB) and return the path."""
    rng = random.Random(seed)
    w = _Writer()
    w.add("general.architecture", "llama")
    w.add("general.name", "candor CPU self-test")
    w.add("llama.context_length", CONTEXT)
    w.add("llama.embedding_length", EMBED)
    w.add("llama.block_count", 1)
    w.add("llama.feed_forward_length", FFN)
    w.add("llama.attention.head_count", HEADS)
    w.add("llama.attention.head_count_kv", HEADS)
    w.add("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add("tokenizer.ggml.model", "llama")
    w.add("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", *(f"t{i}" for i in range(VOCAB - 3))])
    w.add("tokenizer.ggml.scores", [0.0] * 3 + [-float(i) for i in range(VOCAB - 3)])
    w.add("tokenizer.ggml.token_type", [2, 3, 3] + [1] * (VOCAB - 3))
    w.add("tokenizer.ggml.bos_token_id", 1)
    w.add("tokenizer.ggml.eos_token_id", 2)

    embeddings = _f32([rng.uniform(-0.1, 0.1) for _ in range(EMBED * VOCAB)])
    tensors: list[tuple[str, int, tuple[int, ...], bytes]] = [
        ("token_embd.weight", F32, (EMBED, VOCAB), embeddings),
        ("blk.0.attn_norm.weight", F32, (EMBED,), _f32([1.0] * EMBED)),
        ("blk.0.ffn_norm.weight", F32, (EMBED,), _f32([1.0] * EMBED)),
        ("output_norm.weight", F32, (EMBED,), _f32([1.0] * EMBED)),
    ]
    for name, (kind, rows, cols) in MATRICES.items():
        tensors.append((name, kind, (cols, rows), _matrix(kind, rows, cols, rng)))

    alignment = 32
    infos, offset = [], 0
    for name, kind, dims, data in tensors:
        info = w._string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        infos.append(info + struct.pack("<IQ", kind, offset))
        offset += -(-len(data) // alignment) * alignment
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(w.kv)) + b"".join(w.kv) + b"".join(infos)
    with open(path, "wb") as out:
        out.write(header + bytes(-len(header) % alignment))
        for _, _, _, data in tensors:
            out.write(data + bytes(-len(data) % alignment))
    return path
