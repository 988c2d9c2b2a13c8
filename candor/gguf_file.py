"""Read a GGUF file's header (metadata and tensor table) fast, trusting none of its bytes.

Every count and length is checked against the bytes left in the file before anything is looped over or
allocated, and every tensor's data range against the file size, so this is the preflight that keeps
malformed files away from llama.cpp. Large arrays (vocabularies, merges, scores) are summarised, not
materialised; the caller names the few tokens it wants found in `tokenizer.ggml.tokens`.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Collection
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from candor.errors import CandorError, InvalidModelFile, ModelLoadError, ModelNotFound, UnsupportedModel

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
TOKENS_KEY = "tokenizer.ggml.tokens"
TOKEN_TYPES_KEY = "tokenizer.ggml.token_type"
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 63  # GGML_MAX_NAME is 64 including the terminating NUL
MAX_COUNT = 1 << 30  # llama.cpp's GGUF_MAX_ARRAY_ELEMENTS and GGUF_MAX_STRING_LENGTH
MAX_NESTING = 4  # arrays of arrays deeper than this are rejected
INT64_MAX = (1 << 63) - 1
CORRUPT = "re-download the model; the file is truncated or corrupt"


class GGMLType(NamedTuple):
    """One ggml tensor type: elements per block and bytes per block (ggml.h, ggml-common.h)."""

    id: int
    name: str
    block_size: int
    type_size: int


# (ggml_type id, name, elements per block, bytes per block); ids 4, 5, 31-33 and 36-38 were removed.
# fmt: off
GGML_TYPES: dict[int, GGMLType] = {t[0]: GGMLType(*t) for t in (
    (0, "F32", 1, 4), (1, "F16", 1, 2), (2, "Q4_0", 32, 18), (3, "Q4_1", 32, 20), (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24), (8, "Q8_0", 32, 34), (9, "Q8_1", 32, 36), (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110), (12, "Q4_K", 256, 144), (13, "Q5_K", 256, 176), (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292), (16, "IQ2_XXS", 256, 66), (17, "IQ2_XS", 256, 74), (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50), (20, "IQ4_NL", 32, 18), (21, "IQ3_S", 256, 110), (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136), (24, "I8", 1, 1), (25, "I16", 1, 2), (26, "I32", 1, 4), (27, "I64", 1, 8),
    (28, "F64", 1, 8), (29, "IQ1_M", 256, 56), (30, "BF16", 1, 2), (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66), (39, "MXFP4", 32, 17), (40, "NVFP4", 64, 36), (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
)}
# fmt: on

# GGUF value types: id -> (name, little-endian struct); 8 (string) and 9 (array) are read by hand.
_STRING, _ARRAY, _BOOL = 8, 9, 7
_SCALARS: dict[int, tuple[str, struct.Struct]] = {
    0: ("uint8", struct.Struct("<B")),
    1: ("int8", struct.Struct("<b")),
    2: ("uint16", struct.Struct("<H")),
    3: ("int16", struct.Struct("<h")),
    4: ("uint32", struct.Struct("<I")),
    5: ("int32", struct.Struct("<i")),
    6: ("float32", struct.Struct("<f")),
    7: ("bool", struct.Struct("<B")),
    10: ("uint64", struct.Struct("<Q")),
    11: ("int64", struct.Struct("<q")),
    12: ("float64", struct.Struct("<d")),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")
_FLOAT32 = 6
_UINT32, _INT32 = 4, 5
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, value type, a 1-byte value
_MIN_TENSOR_BYTES = 8 + 1 + 4 + 4 + 8  # name length, a 1-byte name, n_dims, type, offset
_FIRST_READ = 1 << 20  # most headers fit; a 262k-token vocabulary takes ~6 MB, read in a few doublings


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array too large to keep: its element type and length."""

    type: str
    length: int

    def __len__(self) -> int:
        """Return the number of elements."""
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table; `offset` is relative to the data section."""

    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length (ne0)
    ggml_type: int
    type_name: str
    offset: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    """Everything a GGUF file says about itself, short of the tensor data."""

    path: Path
    version: int
    file_size: int
    alignment: int
    data_offset: int  # absolute byte where tensor data begins
    metadata: dict[str, Any]  # scalars, small arrays as tuples, large arrays as ArraySummary
    tensors: tuple[TensorInfo, ...]
    found_tokens: dict[str, int]  # requested token -> its first index in tokenizer.ggml.tokens
    token_types: frozenset[int] = frozenset()  # the distinct values of tokenizer.ggml.token_type
    repeated_token: tuple[int, str] | None = None  # (index, text) of a vocabulary entry seen before

    def array_length(self, key: str) -> int | None:
        """Return the length of the array under `key`, kept or summarised; None if it is not an array."""
        value = self.metadata.get(key)
        return len(value) if isinstance(value, (tuple, ArraySummary)) else None

    @property
    def parameter_count(self) -> int:
        """Sum the element counts of every tensor."""
        return sum(t.n_elements for t in self.tensors)


class _Cursor:
    """A bounds-checked position in the file, over a buffer that is read ahead on demand."""

    # Buffered reads, not mmap: a mapped file cut short by another process kills this one with SIGBUS.

    def __init__(self, file: BinaryIO, size: int, path: Path) -> None:
        self.file, self.path, self.pos, self.end = file, path, 0, size
        self.buf = bytearray()

    def error(self, what: str, fix: str = CORRUPT) -> InvalidModelFile:
        return InvalidModelFile(f"{self.path}: {what}; {fix}")

    def fill(self, upto: int) -> None:
        """Read ahead (doubling) until the buffer holds the bytes before `upto`; upto <= end."""
        have = len(self.buf)
        want = min(self.end, max(upto, 2 * have, _FIRST_READ))
        self.file.seek(have)
        self.buf += self.file.read(want - have)
        if len(self.buf) < upto:
            raise self.error(f"the file ended at byte {len(self.buf)} while being read (it has changed)")

    def take(self, n: int, what: str) -> int:
        """Advance past n bytes and return where they start."""
        start = self.pos
        if n > self.end - start:
            raise self.error(f"{what} needs {n} bytes at byte {start} but the file has {self.end} bytes")
        self.pos = start + n
        if self.pos > len(self.buf):
            self.fill(self.pos)
        return start

    def u32(self, what: str) -> int:
        return int(_U32.unpack_from(self.buf, self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack_from(self.buf, self.take(8, what))[0])

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"the length of {what}")
        if n > MAX_COUNT or n > self.end - self.pos:
            raise self.error(
                f"{what} claims {n} bytes at byte {self.pos}, "
                f"but only {self.end - self.pos} bytes remain in the file"
            )
        start = self.take(n, what)
        return bytes(self.buf[start : start + n])

    def count(self, n: int, min_bytes_each: int, what: str) -> int:
        """Reject a count that cannot fit in the rest of the file before anything loops over it."""
        if n > MAX_COUNT or n * min_bytes_each > self.end - self.pos:
            raise self.error(
                f"{what} claims {n} elements at byte {self.pos}, "
                f"more than the {self.end - self.pos} remaining bytes can hold"
            )
        return n


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _float32(value: float) -> float:
    """Return the shortest decimal that reads back as the same float32 (1e-06, not 9.99999997e-07)."""
    packed = _F32.pack(value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if _F32.pack(short) == packed:
            return short
    return value


class _Parser:
    """One pass over the metadata: values, with big arrays summarised and wanted tokens located."""

    def __init__(self, cur: _Cursor, max_array: int, find: Collection[str]) -> None:
        self.cur, self.max_array = cur, max_array
        self.wanted = {t.encode("utf-8"): t for t in find}
        self.found: dict[str, int] = {}
        self.repeated_token: tuple[int, str] | None = None

    def value(self, vtype: int, what: str, depth: int = 0, search: bool = False) -> Any:
        cur = self.cur
        scalar = _SCALARS.get(vtype)
        if scalar is not None:
            value = scalar[1].unpack_from(cur.buf, cur.take(scalar[1].size, what))[0]
            if vtype == _FLOAT32:
                return _float32(value)
            return bool(value) if vtype == _BOOL else value
        if vtype == _STRING:
            return _text(cur.raw_string(what))
        if vtype == _ARRAY:
            if depth >= MAX_NESTING:
                raise cur.error(f"{what} nests arrays more than {MAX_NESTING} deep")
            etype = cur.u32(f"the element type of {what}")
            n = cur.u64(f"the length of {what}")
            return self.array(etype, n, what, depth + 1, search)
        raise cur.error(f"{what} has unknown GGUF value type {vtype}")

    def array(self, etype: int, n: int, what: str, depth: int, search: bool) -> Any:
        cur, keep = self.cur, n <= self.max_array
        scalar = _SCALARS.get(etype)
        if scalar is not None:
            name, st = scalar
            start = cur.take(cur.count(n, st.size, what) * st.size, what)
            if not keep:
                return ArraySummary(name, n)
            values = struct.unpack_from(f"<{n}{st.format[-1]}", cur.buf, start)
            if etype == _FLOAT32:
                return tuple(_float32(v) for v in values)
            return tuple(bool(v) for v in values) if etype == _BOOL else values
        if etype == _STRING:
            strings = self.strings(cur.count(n, 8, what), what, keep, search)
            return ArraySummary("string", n) if strings is None else strings
        if etype == _ARRAY:
            items = [self.value(_ARRAY, f"{what}[{i}]", depth) for i in range(cur.count(n, 12, what))]
            return tuple(items) if keep else ArraySummary("array", n)
        raise cur.error(f"{what} has unknown GGUF element type {etype}")

    def strings(self, n: int, what: str, keep: bool, search: bool) -> tuple[str, ...] | None:
        """Walk n length-prefixed strings in one tight loop (262k of them for a Gemma vocabulary)."""
        cur, pos, end = self.cur, self.cur.pos, self.cur.end
        data = bytes(cur.buf)  # an immutable copy slices to bytes in one step; refreshed after a fill
        wanted = self.wanted if search else {}
        lengths = {len(w) for w in wanted}
        unpack, have = _U64.unpack_from, len(data)
        kept: list[str] | None = [] if keep else None
        vocabulary: list[bytes] | None = [] if search else None  # checked for repeats at the end
        for i in range(n):
            if pos + 8 > have:
                if end - pos < 8:
                    raise cur.error(f"{what} string {i} starts at byte {pos}, past the end of the file")
                cur.fill(pos + 8)
                data = bytes(cur.buf)
                have = len(data)
            size = unpack(data, pos)[0]
            pos += 8
            if pos + size > have:
                if size > end - pos:
                    raise cur.error(
                        f"{what} string {i} claims {size} bytes at byte {pos}, "
                        f"but only {end - pos} bytes remain in the file"
                    )
                cur.fill(pos + size)
                data = bytes(cur.buf)
                have = len(data)
            if kept is not None or vocabulary is not None or size in lengths:
                raw = data[pos : pos + size]
                token = wanted.get(raw)
                if token is not None and token not in self.found:
                    self.found[token] = i
                if kept is not None:
                    kept.append(_text(raw))
                if vocabulary is not None:
                    vocabulary.append(raw)
            pos += size
        cur.pos = pos
        if vocabulary is not None:
            self.repeated_token = _first_repeat(vocabulary)
        return None if kept is None else tuple(kept)


def _first_repeat(tokens: list[bytes]) -> tuple[int, str] | None:
    """The first vocabulary entry equal to an earlier one, as llama.cpp compares them, or None.

    llama.cpp aborts on such a vocabulary. It reads tokens as C strings (cut at a NUL) and names an
    empty one "[EMPTY_i]"; the common case (none empty, no NUL, all distinct) is checked at C speed.
    """
    plain = all(tokens) and not any(map(bytes.__contains__, tokens, repeat(b"\0")))
    if plain and len(set(tokens)) == len(tokens):
        return None
    seen: set[bytes] = set()
    for i, raw in enumerate(tokens):
        text = raw.partition(b"\0")[0] or b"[EMPTY_%d]" % i
        if text in seen:
            return i, _text(text)
        seen.add(text)
    return None


def _open_error(path: Path, exc: OSError) -> CandorError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return ModelNotFound(f"no model file at {path}; check the path, or pull the model first")
    return ModelLoadError(f"cannot read {path}: {exc.strerror or exc}; check that the file is readable")


def read_gguf(path: str | Path, *, find_tokens: Collection[str] = (), max_array: int = 1024) -> GGUFHeader:
    """Parse and validate a GGUF header.

    Args:
        path: the .gguf file.
        find_tokens: strings to look for in `tokenizer.ggml.tokens` during the same pass.
        max_array: arrays longer than this are kept as an ArraySummary instead of a tuple.

    Returns:
        The header; `found_tokens` maps each requested token present in the vocabulary to its index.

    Raises:
        ModelNotFound: nothing exists at `path`.
        InvalidModelFile: not a GGUF file, or a malformed or truncated one.
        UnsupportedModel: a GGUF version or byte order this llama.cpp cannot read.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise InvalidModelFile(f"{path} is a directory, not a GGUF file; pass the path of a .gguf file")
        if not stat.S_ISREG(mode):
            raise InvalidModelFile(
                f"{path} is not a regular file, so not a GGUF model; pass the path of a .gguf file"
            )
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < 4 or file.read(4) != MAGIC:
                raise InvalidModelFile(
                    f"{path} is not a GGUF file (it does not start with 'GGUF'); "
                    "pass a .gguf model file, or convert the model with llama.cpp"
                )
            return _parse(_Cursor(file, size, path), find_tokens, max_array)
    except OSError as exc:
        raise _open_error(path, exc) from None


def _parse(cur: _Cursor, find_tokens: Collection[str], max_array: int) -> GGUFHeader:
    cur.take(4, "the magic")
    version = cur.u32("the GGUF version")
    if version == 0:
        raise cur.error("the GGUF version is 0")
    if version & 0xFFFF == 0:
        raise UnsupportedModel(
            f"{cur.path} is a big-endian GGUF file (version field {version:#x}); "
            "use a little-endian conversion of the model"
        )
    if version > 0xFF:  # no GGUF version will come near this: the header is damaged
        raise cur.error(f"the GGUF version field reads {version}")
    if version not in SUPPORTED_VERSIONS:
        fix = (
            "re-convert the model with a current llama.cpp"
            if version < 2
            else "upgrade candor; the file is newer than its llama.cpp"
        )
        raise UnsupportedModel(
            f"{cur.path} is GGUF version {version}, but only versions 2 and 3 are supported; {fix}"
        )
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > cur.end - cur.pos:
        raise cur.error(
            f"the header claims {n_kv} metadata entries and {n_tensors} tensors, "
            f"which cannot fit in a {cur.end}-byte file"
        )
    parser = _Parser(cur, max_array, find_tokens)
    metadata: dict[str, Any] = {}
    token_types: frozenset[int] = frozenset()
    for i in range(n_kv):
        raw_key = cur.raw_string(f"metadata key {i}")
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            raise cur.error(f"metadata key {i} ({raw_key[:40]!r}) is not valid UTF-8") from None
        if not key:
            raise cur.error(f"metadata key {i} is empty")
        if key in metadata:
            raise cur.error(f"metadata key {key!r} appears twice")
        vtype = cur.u32(f"the type of {key!r}")
        if key == ALIGNMENT_KEY and vtype != _UINT32:  # llama.cpp reads it as uint32 and nothing else
            kind = _SCALARS[vtype][0] if vtype in _SCALARS else f"value type {vtype}"
            raise cur.error(f"{ALIGNMENT_KEY} is stored as {kind}; llama.cpp accepts only uint32")
        start = cur.pos
        metadata[key] = parser.value(vtype, repr(key), search=key == TOKENS_KEY)
        if key == TOKEN_TYPES_KEY:
            token_types = _int32_set(cur, start, vtype)
    alignment = _alignment(cur, metadata)
    tensors = _tensor_table(cur, n_tensors)
    data_offset = -(-cur.pos // alignment) * alignment if n_tensors else cur.pos
    _check_data(cur, tensors, data_offset, alignment)
    return GGUFHeader(
        path=cur.path,
        version=version,
        file_size=cur.end,
        alignment=alignment,
        data_offset=data_offset,
        metadata=metadata,
        tensors=tensors,
        found_tokens=parser.found,
        token_types=token_types,
        repeated_token=parser.repeated_token,
    )


def _int32_set(cur: _Cursor, start: int, vtype: int) -> frozenset[int]:
    """The distinct values of an int32 array whose value starts at `start` (empty for anything else)."""
    if vtype != _ARRAY or _U32.unpack_from(cur.buf, start)[0] != _INT32:
        return frozenset()
    n = _U64.unpack_from(cur.buf, start + 4)[0]
    return frozenset(struct.unpack_from(f"<{n}i", cur.buf, start + 12))


def _alignment(cur: _Cursor, metadata: dict[str, Any]) -> int:
    value = metadata.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise cur.error(f"general.alignment is {value!r}, not a power of two")
    return value


def _tensor_table(cur: _Cursor, n_tensors: int) -> tuple[TensorInfo, ...]:
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        raw_name = cur.raw_string(f"the name of tensor {i}")
        name = _text(raw_name)
        if not raw_name or len(raw_name) > MAX_NAME_BYTES:
            raise cur.error(
                f"tensor {i} has a name of {len(raw_name)} bytes ({name[:80]!r}); "
                f"it must be 1 to {MAX_NAME_BYTES} bytes"
            )
        if name in seen:
            raise cur.error(f"tensor name {name!r} appears twice")
        seen.add(name)
        n_dims = cur.u32(f"the dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise cur.error(f"tensor {name!r} has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")
        dims = tuple(cur.u64(f"a dimension of tensor {name!r}") for _ in range(n_dims))
        n_elements = 1
        for dim in dims:
            if not 1 <= dim <= INT64_MAX:
                raise cur.error(f"tensor {name!r} has dimension {dim}; each must be 1 to {INT64_MAX}")
            n_elements *= dim
        if n_elements > INT64_MAX:
            raise cur.error(f"tensor {name!r} has shape {dims}, over {INT64_MAX} elements")
        type_id = cur.u32(f"the type of tensor {name!r}")
        gtype = GGML_TYPES.get(type_id)
        if gtype is None:
            raise cur.error(
                f"tensor {name!r} has unknown ggml type {type_id}",
                "re-download the model, or upgrade candor if the file is newer than it",
            )
        row = dims[0] if dims else 1
        if row % gtype.block_size:
            raise cur.error(
                f"tensor {name!r} of type {gtype.name} has rows of {row} elements, "
                f"not a multiple of its block size {gtype.block_size}"
            )
        offset = cur.u64(f"the data offset of tensor {name!r}")
        n_bytes = n_elements // gtype.block_size * gtype.type_size
        tensors.append(TensorInfo(name, dims, type_id, gtype.name, offset, n_elements, n_bytes))
    return tuple(tensors)


def _check_data(cur: _Cursor, tensors: tuple[TensorInfo, ...], data_offset: int, alignment: int) -> None:
    """Check every tensor's bytes lie in the file, packed in order as llama.cpp requires."""
    if data_offset > cur.end:
        raise cur.error(f"tensor data should start at byte {data_offset} but the file has {cur.end} bytes")
    expected = 0
    for t in tensors:
        end = data_offset + t.offset + t.n_bytes
        if end > cur.end:
            raise cur.error(f"tensor {t.name!r} data ends at byte {end} but the file has {cur.end} bytes")
        if t.offset != expected:
            raise cur.error(
                f"tensor {t.name!r} data starts at offset {t.offset} of the data section, but "
                f"llama.cpp expects {expected} (packed in order, {alignment}-byte aligned)"
            )
        expected += -(-t.n_bytes // alignment) * alignment
