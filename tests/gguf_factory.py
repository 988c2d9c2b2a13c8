"""Write tiny GGUF models (that real llama.cpp loads and runs) and corrupted copies of them, for tests."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np

EMBED, FFN, CONTEXT, HEADS = 64, 128, 256, 4
SPECIALS = ("<unk>", "<s>", "</s>")
# 14 characters and the pieces that SPM merges them into, every intermediate piece included, so that
# "hello the world" tokenizes to [<s>, ▁hello, ▁the, ▁world] and unknown text falls back to bytes.
WORDS = (
    "▁",
    "t",
    "h",
    "e",
    "l",
    "o",
    "w",
    "r",
    "d",
    "a",
    "i",
    "s",
    "n",
    ".",
    "▁t",
    "he",
    "▁the",
    "▁h",
    "▁he",
    "ll",
    "▁hell",
    "▁hello",
    "▁w",
    "or",
    "▁wor",
    "ld",
    "▁world",
    "▁a",
    "▁i",
    "▁is",
    "in",
    "▁in",
    "an",
    "▁an",
    "nd",
    "▁and",
    "▁s",
    "▁o",
    "on",
    "▁on",
    "er",
)
NORMAL, CONTROL, BYTE = 1, 3, 6
FILE_TYPE_OF = {"F32": 0, "F16": 1, "Q8_0": 7}


def vocabulary(extra_tokens: Sequence[str] = ()) -> list[str]:
    """Return the SPM vocabulary: 3 specials, 256 byte tokens, 41 pieces, then any extra tokens."""
    return [*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *WORDS, *extra_tokens]


def _tensor_name(kind: gguf.MODEL_TENSOR, layer: int | None = None) -> str:
    return str(gguf.TENSOR_NAMES[kind].format(bid=layer)) + ".weight"


def tiny_llama_tensors(n_vocab: int, n_layers: int, n_kv_heads: int, seed: int = 0) -> dict[str, Any]:
    """Return name -> float32 numpy array, shaped (rows, cols) = ggml (ne1, ne0)."""
    rng = np.random.default_rng(seed)
    head_dim = EMBED // HEADS
    T = gguf.MODEL_TENSOR

    def weight(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors: dict[str, Any] = {
        _tensor_name(T.TOKEN_EMBD): weight(n_vocab, EMBED),
        _tensor_name(T.OUTPUT_NORM): np.ones(EMBED, dtype=np.float32),
        _tensor_name(T.OUTPUT): weight(n_vocab, EMBED),
    }
    for i in range(n_layers):
        tensors.update(
            {
                _tensor_name(T.ATTN_NORM, i): np.ones(EMBED, dtype=np.float32),
                _tensor_name(T.ATTN_Q, i): weight(EMBED, EMBED),
                _tensor_name(T.ATTN_K, i): weight(n_kv_heads * head_dim, EMBED),
                _tensor_name(T.ATTN_V, i): weight(n_kv_heads * head_dim, EMBED),
                _tensor_name(T.ATTN_OUT, i): weight(EMBED, EMBED),
                _tensor_name(T.FFN_NORM, i): np.ones(EMBED, dtype=np.float32),
                _tensor_name(T.FFN_GATE, i): weight(FFN, EMBED),
                _tensor_name(T.FFN_UP, i): weight(FFN, EMBED),
                _tensor_name(T.FFN_DOWN, i): weight(EMBED, FFN),
            }
        )
    return tensors


def write_tiny_llama(
    path: Path,
    *,
    name: str = "Tiny Llama",
    basename: str | None = "tiny-llama",
    finetune: str | None = None,
    size_label: str | None = None,
    base_models: Sequence[Mapping[str, str]] = (),
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    tags: Sequence[str] = (),
    chat_template: str | None = None,
    extra_tokens: Sequence[str] = (),
    n_layers: int = 2,
    n_kv_heads: int = 4,
    tensor_type: str = "F32",
    write_file_type: bool = True,
    alignment: int | None = None,
    arch: str = "llama",
    extra_metadata: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Write a llama-shaped GGUF that llama.cpp can load (when arch is "llama").

    tensor_type is F32, F16 or Q8_0 for the 2-D weights (norms stay F32). An extra_metadata value is
    written with the type the gguf package infers, or given as (value, GGUFValueType[, sub_type]).
    """
    vocab = vocabulary(extra_tokens)
    w = gguf.GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_type("model")
    w.add_name(name)
    for value, add in (
        (basename, w.add_basename),
        (finetune, w.add_finetune),
        (size_label, w.add_size_label),
        (license, w.add_license),
        (license_name, w.add_license_name),
        (license_link, w.add_license_link),
        (chat_template, w.add_chat_template),
    ):
        if value is not None:
            add(value)
    if base_models:
        w.add_base_model_count(len(base_models))
        for i, base in enumerate(base_models):
            for field, value in base.items():
                getattr(w, f"add_base_model_{field}")(i, value)
    if tags:
        w.add_tags(list(tags))
    w.add_context_length(CONTEXT)
    w.add_embedding_length(EMBED)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_dimension_count(EMBED // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    if write_file_type:
        w.add_file_type(FILE_TYPE_OF[tensor_type])
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab)
    w.add_token_scores([0.0] * (3 + 256) + [-float(i) for i in range(len(vocab) - 259)])
    w.add_token_types([CONTROL] * 3 + [BYTE] * 256 + [NORMAL] * len(WORDS) + [CONTROL] * len(extra_tokens))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for key, value in (extra_metadata or {}).items():
        if isinstance(value, tuple):
            w.add_key_value(key, *value)
        else:
            w.add_key_value(key, value, gguf.GGUFValueType.get_type(value))
    for tensor_name, data in tiny_llama_tensors(len(vocab), n_layers, n_kv_heads, seed).items():
        _add_tensor(w, tensor_name, data, tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_tensor(w: gguf.GGUFWriter, name: str, data: Any, tensor_type: str) -> None:
    if data.ndim == 1 or tensor_type == "F32":  # norms stay F32, as in llama.cpp's own quantizations
        w.add_tensor(name, data)
    elif tensor_type == "F16":
        w.add_tensor(name, data.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType[tensor_type]
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


# --- corrupted copies -------------------------------------------------------------------------------


def _patched(src: Path, dst: Path, position: int, payload: bytes) -> Path:
    data = bytearray(src.read_bytes())
    data[position : position + len(payload)] = payload
    dst.write_bytes(bytes(data))
    return dst


def truncated(src: Path, dst: Path, keep: int) -> Path:
    """Copy only the first `keep` bytes (negative: drop that many from the end)."""
    data = src.read_bytes()
    dst.write_bytes(data[:keep])
    return dst


def wrong_magic(src: Path, dst: Path) -> Path:
    """Copy with the magic replaced by GGML's old one."""
    return _patched(src, dst, 0, b"lmgg")


def four_byte_file(dst: Path) -> Path:
    """Write a file that is only the magic."""
    dst.write_bytes(b"GGUF")
    return dst


def kv_count(src: Path) -> int:
    """Return the number of metadata entries the header declares."""
    return int(struct.unpack_from("<Q", src.read_bytes(), 16)[0])


def with_version(src: Path, dst: Path, version: int) -> Path:
    """Copy with the version field set (2: still valid; 1, 4 or 0x03000000: unsupported)."""
    return _patched(src, dst, 4, struct.pack("<I", version))


def with_counts(src: Path, dst: Path, *, n_tensors: int | None = None, n_kv: int | None = None) -> Path:
    """Copy with the tensor and/or metadata count replaced (e.g. 2**63)."""
    data = bytearray(src.read_bytes())
    if n_tensors is not None:
        data[8:16] = struct.pack("<Q", n_tensors)
    if n_kv is not None:
        data[16:24] = struct.pack("<Q", n_kv)
    dst.write_bytes(bytes(data))
    return dst


def _field_part_offset(src: Path, field: Any, part: int) -> int:
    return int(field.offset) + sum(int(p.nbytes) for p in field.parts[:part])


def with_string_length(src: Path, dst: Path, key: str, length: int) -> Path:
    """Copy with the length prefix of the string value under `key` replaced."""
    field = gguf.GGUFReader(src).fields[key]
    return _patched(src, dst, _field_part_offset(src, field, 3), struct.pack("<Q", length))


def with_key_length(src: Path, dst: Path, index: int, length: int) -> Path:
    """Copy with the length prefix of the index-th metadata key replaced."""
    field = list(gguf.GGUFReader(src).fields.values())[index + 3]  # after the 3 header pseudo-fields
    return _patched(src, dst, int(field.offset), struct.pack("<Q", length))


def with_tensor_field(src: Path, dst: Path, tensor: str, what: str, value: int) -> Path:
    """Copy with one field of a tensor-info entry replaced: "n_dims", "dim0", "type" or "offset"."""
    reader = gguf.GGUFReader(src)
    field = next(t.field for t in reader.tensors if t.name == tensor)
    # parts: name length, name, n_dims, dims, type, offset
    part, fmt = {"n_dims": (2, "<I"), "dim0": (3, "<Q"), "type": (4, "<I"), "offset": (5, "<Q")}[what]
    return _patched(src, dst, _field_part_offset(src, field, part), struct.pack(fmt, value))


def with_value_type(src: Path, dst: Path, key: str, vtype: int) -> Path:
    """Copy with the value-type field of the metadata entry `key` replaced."""
    field = gguf.GGUFReader(src).fields[key]
    return _patched(src, dst, _field_part_offset(src, field, 2), struct.pack("<I", vtype))


def tensor_offset(src: Path, tensor: str) -> int:
    """Return a tensor's data offset as stored (relative to the data section), read by the gguf package."""
    reader = gguf.GGUFReader(src)
    info = next(t for t in reader.tensors if t.name == tensor)
    return int(info.data_offset) - int(reader.data_offset)


def with_bytes_replaced(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """Copy with the first occurrence of `old` replaced by `new` (same length keeps the layout)."""
    data = src.read_bytes()
    if old not in data or len(old) != len(new):
        raise ValueError(f"cannot replace {old!r} with {new!r} in {src}")
    dst.write_bytes(data.replace(old, new, 1))
    return dst
