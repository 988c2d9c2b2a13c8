"""A GGUF file as editable parts (header, metadata entries, tensor infos, data), written back unchecked.

The corpus (bad_gguf.py) and the fuzzers (gguf_mutants.py) cut malformed files from the tiny fixture
model with it: parse the sound file, change any part (including ones that must agree, such as counts
and offsets), and write bytes that lie exactly as intended.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

from gguf_factory import write_tiny_llama

# GGUF value types (gguf.h) and the bytes of each fixed-size one.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
GGUF_TYPE_COUNT = 13
FIXED_SIZE = {U8: 1, I8: 1, U16: 2, I16: 2, U32: 4, I32: 4, F32: 4, BOOL: 1, U64: 8, I64: 8, F64: 8}
GGML_F32, GGML_Q4_2_REMOVED, GGML_Q8_0, GGML_Q4_K = 0, 4, 8, 12
GGML_I8, GGML_I32, GGML_I64, GGML_F64 = 24, 26, 27, 28
GGML_TYPE_COUNT = 43
MINUS_ONE = (1 << 64) - 1  # -1 as an unsigned 64-bit field
NEAR_2_63 = (1 << 63) - 1
TOKENS = "tokenizer.ggml.tokens"


def u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value & MINUS_ONE)


def gstr(text: str | bytes) -> bytes:
    """A GGUF string: u64 length, then the bytes."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return u64(len(raw)) + raw


@dataclass
class KV:
    """One metadata entry, its value kept as the encoded bytes that follow the type field."""

    key: bytes
    vtype: int
    value: bytes

    def to_bytes(self) -> bytes:
        return gstr(self.key) + u32(self.vtype) + self.value


@dataclass
class Tensor:
    """One tensor-info entry; `n_dims` overrides len(dims) when set (to lie about it)."""

    name: bytes
    dims: list[int]
    ggml_type: int
    offset: int
    n_dims: int | None = None

    def to_bytes(self) -> bytes:
        n_dims = len(self.dims) if self.n_dims is None else self.n_dims
        return (
            gstr(self.name)
            + u32(n_dims)
            + b"".join(u64(d) for d in self.dims)
            + u32(self.ggml_type)
            + u64(self.offset)
        )


@dataclass
class Layout:
    """A GGUF file as its parts, written back without any validation (so every part can lie)."""

    kvs: list[KV]
    tensors: list[Tensor]
    data: bytes
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None  # None: the real count
    n_kv: int | None = None
    pad_to: int = 32  # alignment the data section is padded to (0: no padding)

    def copy(self) -> Layout:
        return replace(
            self,
            kvs=[replace(k) for k in self.kvs],
            tensors=[replace(t, dims=list(t.dims)) for t in self.tensors],
        )

    def header(self) -> bytes:
        n_tensors = len(self.tensors) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        return self.magic + u32(self.version) + u64(n_tensors) + u64(n_kv)

    def sections(self) -> list[tuple[str, bytes]]:
        """The file as named pieces, in order: header, each KV, each tensor info, padding, data."""
        parts = [("header", self.header())]
        parts += [(f"kv {kv.key.decode('utf-8', 'replace')}", kv.to_bytes()) for kv in self.kvs]
        parts += [(f"tensor {t.name.decode('utf-8', 'replace')}", t.to_bytes()) for t in self.tensors]
        size = sum(len(p) for _, p in parts)
        if self.tensors and 0 < self.pad_to <= 1 << 20:
            parts.append(("padding", b"\0" * (-size % self.pad_to)))
        parts.append(("data", self.data))
        return parts

    def to_bytes(self) -> bytes:
        return b"".join(p for _, p in self.sections())

    def boundaries(self) -> list[tuple[str, int]]:
        """Byte positions where each section ends: the places to cut a file short."""
        out, pos = [], 0
        for name, part in self.sections():
            pos += len(part)
            out.append((name, pos))
        return out

    # -- edits -------------------------------------------------------------------------------------

    def kv(self, key: str) -> KV:
        return next(k for k in self.kvs if k.key == key.encode())

    def set(self, key: str, vtype: int, value: bytes) -> Layout:
        """Replace (or append) the entry `key`."""
        for entry in self.kvs:
            if entry.key == key.encode():
                entry.vtype, entry.value = vtype, value
                return self
        self.kvs.append(KV(key.encode(), vtype, value))
        return self

    def drop(self, key: str) -> Layout:
        self.kvs = [k for k in self.kvs if k.key != key.encode()]
        return self

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name.encode())


def parse(raw: bytes) -> Layout:
    """Split a well-formed GGUF (the fixture model) into its parts; trusts the file."""
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", raw, 8)

    def string_at(p: int) -> tuple[bytes, int]:
        n = struct.unpack_from("<Q", raw, p)[0]
        return raw[p + 8 : p + 8 + n], p + 8 + n

    def skip_value(p: int, vtype: int) -> int:
        if vtype in FIXED_SIZE:
            return p + FIXED_SIZE[vtype]
        if vtype == STRING:
            return string_at(p)[1]
        etype, n = struct.unpack_from("<IQ", raw, p)
        p += 12
        for _ in range(n):
            p = skip_value(p, etype)
        return p

    kvs = []
    for _ in range(n_kv):
        key, pos = string_at(pos)
        vtype = struct.unpack_from("<I", raw, pos)[0]
        end = skip_value(pos + 4, vtype)
        kvs.append(KV(key, vtype, raw[pos + 4 : end]))
        pos = end
    alignment = 32
    for kv in kvs:
        if kv.key == b"general.alignment":
            alignment = struct.unpack("<I", kv.value)[0]
    tensors = []
    for _ in range(n_tensors):
        name, pos = string_at(pos)
        n_dims = struct.unpack_from("<I", raw, pos)[0]
        dims = list(struct.unpack_from(f"<{n_dims}Q", raw, pos + 4))
        pos += 4 + 8 * n_dims
        ggml_type, offset = struct.unpack_from("<IQ", raw, pos)
        pos += 12
        tensors.append(Tensor(name, dims, ggml_type, offset))
    data_start = -(-pos // alignment) * alignment
    return Layout(kvs=kvs, tensors=tensors, data=raw[data_start:], pad_to=alignment)


@dataclass(frozen=True)
class Base:
    """The fixture model the cases are cut from: its bytes and its parts."""

    raw: bytes
    layout: Layout

    @classmethod
    def make(cls, folder: Path) -> Base:
        path = write_tiny_llama(folder / "tiny-base.gguf")
        raw = path.read_bytes()
        layout = parse(raw)
        if layout.to_bytes() != raw:
            raise AssertionError("the GGUF layout does not round-trip the fixture model")
        return cls(raw, layout)

    def edit(self) -> Layout:
        return self.layout.copy()

    def cut(self, section: str, extra: int = 0) -> bytes:
        """The file cut short where `section` ends (plus `extra` bytes, negative to cut inside it)."""
        ends = dict(self.layout.boundaries())
        return self.raw[: ends[section] + extra]
