"""Random mutations of the tiny fixture model's header, for the fuzzers (test_fuzz_gguf.py, scripts/).

Each mutation is a plain function of its parameters, so hypothesis can draw them and a seeded random
generator can too. Most damage the file; `rename` and `extra_key` are harmless and must still load.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gguf_layout import (
    ARRAY,
    F32,
    FIXED_SIZE,
    KV,
    MINUS_ONE,
    NEAR_2_63,
    STRING,
    U64,
    Base,
    Layout,
    gstr,
    u32,
    u64,
)

INTERESTING = (0, 1, 2, 3, 63, 64, 255, 256, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
INTERESTING += (1 << 32, (1 << 31) + 1, NEAR_2_63, 1 << 63, MINUS_ONE, MINUS_ONE - 1)


@dataclass(frozen=True)
class Field:
    """A fixed-width number in the file: where it is, how wide, and what it means."""

    label: str
    pos: int
    width: int  # 4 or 8


def fields(layout: Layout) -> list[Field]:
    """Every length, count, type, dimension and offset field of the header, with its position."""
    out = [Field("version", 4, 4), Field("n_tensors", 8, 8), Field("n_kv", 16, 8)]
    pos = 24
    for kv in layout.kvs:
        key = kv.key.decode("utf-8", "replace")
        out.append(Field(f"{key}: key length", pos, 8))
        pos += 8 + len(kv.key)
        out.append(Field(f"{key}: value type", pos, 4))
        pos += 4
        if kv.vtype == STRING:
            out.append(Field(f"{key}: string length", pos, 8))
        elif kv.vtype == ARRAY:
            out += [Field(f"{key}: element type", pos, 4), Field(f"{key}: array length", pos + 4, 8)]
        elif FIXED_SIZE.get(kv.vtype) in (4, 8):
            out.append(Field(f"{key}: value", pos, FIXED_SIZE[kv.vtype]))
        pos += len(kv.value)
    for t in layout.tensors:
        name = t.name.decode("utf-8", "replace")
        out.append(Field(f"{name}: name length", pos, 8))
        pos += 8 + len(t.name)
        out.append(Field(f"{name}: n_dims", pos, 4))
        pos += 4
        for i in range(len(t.dims)):
            out.append(Field(f"{name}: dim {i}", pos, 8))
            pos += 8
        out += [Field(f"{name}: ggml type", pos, 4), Field(f"{name}: offset", pos + 4, 8)]
        pos += 12
    return out


@dataclass(frozen=True)
class Mutant:
    """One fuzz input: its bytes, how it was made, and whether it must still load."""

    data: bytes
    how: str
    harmless: bool = False


def header_end(base: Base) -> int:
    """Where the tensor table ends: everything before it is header bytes to mutate."""
    return dict(base.layout.boundaries())["tensor " + base.layout.tensors[-1].name.decode()]


def flip_bytes(base: Base, positions: list[int], values: list[int]) -> Mutant:
    """Overwrite header bytes (positions are taken modulo the header's length)."""
    data, end = bytearray(base.raw), header_end(base)
    for pos, value in zip(positions, values, strict=False):  # the shorter list decides
        data[pos % end] = value & 0xFF
    return Mutant(bytes(data), f"bytes {[p % end for p in positions]} := {[v & 0xFF for v in values]}")


def set_field(base: Base, index: int, value: int) -> Mutant:
    """Overwrite one length/count/type/dimension/offset field with `value`."""
    field_ = fields(base.layout)[index % len(fields(base.layout))]
    data = bytearray(base.raw)
    data[field_.pos : field_.pos + field_.width] = (u32 if field_.width == 4 else u64)(value)
    return Mutant(bytes(data), f"{field_.label} := {value}")


def truncate(base: Base, cut: int) -> Mutant:
    """Cut the file short (anywhere, header or data)."""
    cut %= len(base.raw)
    return Mutant(base.raw[:cut], f"truncated to {cut} bytes")


def set_number(base: Base, index: int, value: int) -> Mutant:
    """Give one numeric metadata entry (hyperparameters, token ids) a new value of the same type."""
    layout = base.edit()
    numeric = [kv for kv in layout.kvs if FIXED_SIZE.get(kv.vtype, 0) >= 4 and kv.vtype != F32]
    kv = numeric[index % len(numeric)]
    kv.value = (u32 if FIXED_SIZE[kv.vtype] == 4 else u64)(value)
    return Mutant(layout.to_bytes(), f"{kv.key.decode()} := {value}")


def set_float(base: Base, index: int, value: float) -> Mutant:
    """Give one float32 metadata entry (epsilons, rope base) a new value."""
    layout = base.edit()
    floats = [kv for kv in layout.kvs if kv.vtype == F32]
    kv = floats[index % len(floats)]
    kv.value = struct.pack("<f", value)
    return Mutant(layout.to_bytes(), f"{kv.key.decode()} := {value}")


def rename(base: Base, name: str) -> Mutant:
    """A harmless change: another general.name (any length, any text)."""
    layout = base.edit().set("general.name", STRING, gstr(name))
    return Mutant(layout.to_bytes(), f"general.name := {name[:40]!r}", harmless=True)


def extra_key(base: Base, key: str, value: int | str) -> Mutant:
    """A harmless change: one more metadata entry under a key no one reads."""
    layout = base.edit()
    entry = ("candor.fuzz." + key).encode("utf-8")
    if all(kv.key != entry for kv in layout.kvs):
        encoded = (STRING, gstr(value)) if isinstance(value, str) else (U64, u64(value))
        layout.kvs.append(KV(entry, *encoded))
    return Mutant(layout.to_bytes(), f"extra key {entry.decode()!r}", harmless=True)


# Architectures llama.cpp knows (llama-arch.cpp LLM_ARCH_NAMES): a transplant reads the fixture's values
# through another architecture's hyperparameter code, where arch-specific assertions live.
ARCHITECTURES = (
    "clip", "llama", "llama4", "deci", "falcon", "grok", "gpt2", "gptj", "gptneox", "mpt", "baichuan",
    "starcoder", "refact", "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
    "jina-bert-v3", "eurobert", "bloom", "stablelm", "qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3",
    "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe", "phi2", "phi3", "phimoe",
    "plamo", "plamo2", "plamo3", "codeshell", "orion", "internlm2", "minicpm", "minicpm3", "gemma", "gemma2",
    "gemma3", "gemma3n", "gemma4", "gemma-embedding", "starcoder2", "mamba", "mamba2", "jamba", "falcon-h1",
    "xverse", "command-r", "cohere2", "dbrx", "olmo", "olmo2", "olmoe", "openelm", "arctic", "deepseek",
    "deepseek2", "chatglm", "glm4", "glm4moe", "bitnet", "t5", "t5encoder", "jais", "nemotron",
    "nemotron_h", "exaone", "exaone4", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "granite", "granitemoe",
    "granitehybrid", "chameleon", "wavtokenizer-dec", "plm", "bailingmoe", "bailingmoe2", "dots1", "arcee",
    "ernie4_5", "ernie4_5-moe", "hunyuan-moe", "hunyuan-dense", "smollm3", "gpt-oss", "lfm2", "lfm2moe",
    "dream", "smallthinker", "llada", "llada-moe", "seed_oss", "grovemoe", "apertus", "minimax-m2",
    "cogvlm", "pangu-embedded", "mistral3", "kimi-linear", "mellum",
)  # fmt: skip
TOKENIZERS = ("llama", "gpt2", "bert", "t5", "rwkv", "plamo2", "no_vocab", "none", "whitespace", "test", "")
STRINGS = ("", "none", "linear", "yarn", "longrope", "mean", "\0", "x" * 300, "é\ud7ff", *TOKENIZERS)


def transplant(base: Base, index: int) -> Mutant:
    """Name another architecture and move the `llama.*` keys under its name."""
    arch = ARCHITECTURES[index % len(ARCHITECTURES)]
    layout = base.edit().set("general.architecture", STRING, gstr(arch))
    for kv in layout.kvs:
        if kv.key.startswith(b"llama."):
            kv.key = arch.encode() + kv.key[5:]
    return Mutant(layout.to_bytes(), f"architecture := {arch!r}, its keys moved")


def set_string(base: Base, index: int, text: str) -> Mutant:
    """Give one string metadata entry (architecture, tokenizer, names...) another value."""
    layout = base.edit()
    strings = [kv for kv in layout.kvs if kv.vtype == STRING]
    kv = strings[index % len(strings)]
    kv.value = gstr(text.encode("utf-8", "surrogatepass"))
    return Mutant(layout.to_bytes(), f"{kv.key.decode()} := {text[:40]!r}")


def drop_key(base: Base, index: int) -> Mutant:
    """Remove one metadata entry."""
    layout = base.edit()
    kv = layout.kvs.pop(index % len(layout.kvs))
    return Mutant(layout.to_bytes(), f"{kv.key.decode()} removed")
