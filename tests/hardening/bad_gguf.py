"""A corpus of malformed GGUF files, cut from the tiny fixture model by byte edits and hand-written headers.

Each `Case` names what it breaks and where candor must stop it (`stage`):
- "preflight": candor's own check refuses it (InvalidModelFile, or UnsupportedModel where named);
  llama.cpp never sees the file. Some are well-formed GGUF that make llama.cpp abort or segfault
  (GGML_ASSERT on a hyperparameter, a weight type no kernel computes with) rather than fail.
- "llama.cpp": well-formed GGUF that llama.cpp refuses with an error (ModelLoadError), never an abort.
- "template": the file loads, but its chat template is hostile; rendering it raises TemplateError.

The classes follow llama.cpp's tests/test-gguf.cpp (its handcrafted_file_type list) and the shapes of past
CVEs in this field: a 4-byte file, counts near 2^63, offsets past EOF, a token longer than 2^31, too many
blocks, jinja templates that try to leave the sandbox or render forever. scripts/make_bad_gguf_corpus.py
writes them all to a folder.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from gguf_layout import (
    ARRAY,
    F32,
    GGML_F64,
    GGML_I8,
    GGML_I32,
    GGML_I64,
    GGML_Q4_2_REMOVED,
    GGML_Q4_K,
    GGML_Q8_0,
    GGML_TYPE_COUNT,
    GGUF_TYPE_COUNT,
    I32,
    MINUS_ONE,
    NEAR_2_63,
    STRING,
    TOKENS,
    U8,
    U32,
    Base,
    Layout,
    Tensor,
    gstr,
    u32,
    u64,
)

from candor.errors import CandorError, InvalidModelFile, ModelLoadError, TemplateError, UnsupportedModel

Stage = Literal["preflight", "llama.cpp", "template"]
Build = Callable[[Base], bytes]


@dataclass(frozen=True)
class Case:
    """One malformed file: its name, what it breaks, and where candor must stop it."""

    name: str
    breaks: str
    stage: Stage
    build: Build
    error: type[CandorError]  # what candor.load raises (for "template": what chat raises)

    def write(self, base: Base, folder: Path) -> Path:
        path = folder / f"{self.name}.gguf"
        path.write_bytes(self.build(base))
        return path


# --- builders -------------------------------------------------------------------------------------


def _edit(change: Callable[[Layout], object]) -> Build:
    def build(base: Base) -> bytes:
        layout = base.edit()
        change(layout)
        return layout.to_bytes()

    return build


def _attrs(**values: object) -> Build:
    """Set header attributes of the layout (magic, version, n_tensors, n_kv)."""
    return _edit(lambda layout: [setattr(layout, k, v) for k, v in values.items()])


def _kv(key: str, vtype: int, value: bytes) -> Build:
    """Set (or add) one metadata entry."""
    return _edit(lambda layout: layout.set(key, vtype, value))


def _drop(key: str) -> Build:
    return _edit(lambda layout: layout.drop(key))


def _kv_attrs(index: int, **values: object) -> Build:
    """Set fields (key, vtype, value) of the index-th metadata entry."""
    return _edit(lambda layout: [setattr(layout.kvs[index], k, v) for k, v in values.items()])


def _tensor(tensor: str, /, **values: object) -> Build:
    """Set fields (name, dims, n_dims, ggml_type, offset) of one tensor-info entry."""
    return _edit(lambda layout: [setattr(layout.tensor(tensor), k, v) for k, v in values.items()])


def _header(*, version: int = 3, n_tensors: int = 0, n_kv: int = 0, body: bytes = b"") -> Build:
    """A file written by hand from the header up (no fixture model)."""
    return lambda base: b"GGUF" + u32(version) + u64(n_tensors) + u64(n_kv) + body


def _token_length(index: int, length: int) -> Build:
    """The vocabulary with the length field of token `index` replaced (the rest left as it was)."""

    def change(layout: Layout) -> None:
        kv = layout.kv(TOKENS)
        pos = 12  # element type, count
        for _ in range(index):
            pos += 8 + struct.unpack_from("<Q", kv.value, pos)[0]
        kv.value = kv.value[:pos] + u64(length) + kv.value[pos + 8 :]

    return _edit(change)


def _token_text(index: int, text: bytes) -> Build:
    """The vocabulary with token `index` replaced by `text` (lengths kept consistent)."""

    def change(layout: Layout) -> None:
        kv = layout.kv(TOKENS)
        pos = 12  # element type, count
        for _ in range(index):
            pos += 8 + struct.unpack_from("<Q", kv.value, pos)[0]
        old = struct.unpack_from("<Q", kv.value, pos)[0]
        kv.value = kv.value[:pos] + gstr(text) + kv.value[pos + 8 + old :]

    return _edit(change)


def _retyped(name: str, ggml_type: int, code: str) -> Build:
    """One F32 tensor converted to another element type (an `array` type code), all data laid out anew."""

    def change(layout: Layout) -> None:
        blobs = []
        for t in layout.tensors:
            n = 1
            for d in t.dims:
                n *= d
            blob = layout.data[t.offset : t.offset + 4 * n]
            if t.name == name.encode():
                values = array.array("f", blob)
                integers = code in "bhiq"
                blob = array.array(code, [int(v * 100) for v in values] if integers else values).tobytes()
                t.ggml_type = ggml_type
            blobs.append(blob)
        data = bytearray()
        for t, blob in zip(layout.tensors, blobs, strict=True):
            t.offset = len(data)
            data += blob + b"\0" * (-len(blob) % layout.pad_to)
        layout.data = bytes(data)

    return _edit(change)


def _array(etype: int, items: list[bytes]) -> bytes:
    return u32(etype) + u64(len(items)) + b"".join(items)


def _duplicate_tensor_name(layout: Layout) -> None:
    layout.tensors[1].name = layout.tensors[0].name


def _swap_offsets(layout: Layout) -> None:
    a, b = layout.tensors[0], layout.tensors[2]  # two tensors of the same size
    a.offset, b.offset = b.offset, a.offset


def _tensors(*tensors: Tensor, data: bytes | None = None) -> Build:
    """Replace the whole tensor table (and, if given, the data)."""

    def change(layout: Layout) -> None:
        layout.tensors = list(tensors)
        if data is not None:
            layout.data = data

    return _edit(change)


def _count(field: str, delta: int) -> Build:
    """Claim `delta` more (or fewer) entries than the file holds."""

    def change(layout: Layout) -> None:
        held = len(layout.kvs) if field == "n_kv" else len(layout.tensors)
        setattr(layout, field, held + delta)

    return _edit(change)


def _cut(section: str, extra: int = 0) -> Build:
    return lambda base: base.cut(section, extra)


def _cut_last(kind: str) -> Build:
    """Cut where the last metadata entry ("kv") or the last tensor info ("tensor") ends."""

    def build(base: Base) -> bytes:
        last = base.layout.kvs[-1].key if kind == "kv" else base.layout.tensors[-1].name
        return base.cut(f"{kind} {last.decode()}")

    return build


# --- the cases ------------------------------------------------------------------------------------

NAME_ARCH, EMBD, NORM, OUT = (
    "general.architecture",
    "token_embd.weight",
    "output_norm.weight",
    "output.weight",
)
I8_HUGE = 0x7FFFFFFFFFFFFFC0  # test-gguf.cpp DATA_MEM_SIZE_OVERFLOW: each fits, the sum overflows size_t
WRAP = [4, 1073741823, 1073741825, 1]  # F32 of 2^64-16 bytes, which GGML_PAD wraps to 0

# name -> (what it breaks, how it is built); candor must refuse each before llama.cpp sees it.
PREFLIGHT: dict[str, tuple[str, Build]] = {
    # header (test-gguf.cpp HEADER_*)
    "empty_file": ("a file of 0 bytes", lambda b: b""),
    "four_byte_file": ("only the magic: every header field missing (CVE shape)", lambda b: b"GGUF"),
    "bad_magic": ("the magic is 'FUGG'", _attrs(magic=b"FUGG")),
    "ggml_magic": ("the magic of the pre-GGUF 'ggml' format", _attrs(magic=b"lmgg")),
    "version_0": ("GGUF version 0", _attrs(version=0)),
    "version_1": ("GGUF version 1 (no longer readable)", _attrs(version=1)),
    "version_future": ("GGUF version 4, newer than llama.cpp", _attrs(version=4)),
    "version_big_endian": ("version 3 written big-endian", _attrs(version=0x03000000)),
    "version_huge": ("the version field is 0xFFFFFFFF", _attrs(version=0xFFFFFFFF)),
    "n_tensors_minus_1": ("tensor count -1", _attrs(n_tensors=MINUS_ONE)),
    "n_tensors_near_2_63": ("tensor count 2^63-1", _attrs(n_tensors=NEAR_2_63)),
    "n_kv_minus_1": ("metadata count -1", _attrs(n_kv=MINUS_ONE)),
    "n_kv_near_2_63": ("metadata count 2^63-1 (CVE shape)", _attrs(n_kv=NEAR_2_63)),
    "n_kv_one_too_many": ("one more metadata entry claimed than written", _count("n_kv", 1)),
    "header_only": ("a valid empty GGUF: no metadata, no tensors, so no architecture", _header()),
    "counts_without_body": (
        "a hand-written header claiming 5 tensors and 5 keys",
        _header(n_tensors=5, n_kv=5),
    ),
    # metadata (test-gguf.cpp KV_*)
    "key_length_minus_1": ("a key whose length field is -1", _header(n_kv=1, body=u64(MINUS_ONE) + b"key")),
    "key_length_past_eof": ("a key claiming a megabyte", _header(n_kv=1, body=u64(1 << 20) + b"key")),
    "empty_key": ("a metadata key of 0 bytes", _kv_attrs(1, key=b"")),
    "key_not_utf8": ("a key that is not UTF-8", _kv_attrs(1, key=b"general.\xff\xfe")),
    "duplicate_key": (
        "general.name twice",
        _edit(lambda lay: lay.kvs.append(replace(lay.kv("general.name")))),
    ),
    "bad_value_type": ("a value of type 13 (GGUF_TYPE_COUNT)", _kv_attrs(2, vtype=GGUF_TYPE_COUNT)),
    "bad_array_element_type": (
        "an array of element type 13",
        _kv("general.tags", ARRAY, _array(GGUF_TYPE_COUNT, [b"x"])),
    ),
    "string_length_minus_1": (
        "general.name claims 2^64-1 bytes",
        _kv("general.name", STRING, u64(MINUS_ONE) + b"Tiny"),
    ),
    "array_length_near_2_63": (
        "the vocabulary claims 2^63-1 tokens",
        _edit(
            lambda lay: setattr(
                lay.kv(TOKENS), "value", u32(STRING) + u64(NEAR_2_63) + lay.kv(TOKENS).value[12:]
            )
        ),
    ),
    "alignment_0": ("general.alignment = 0", _kv("general.alignment", U32, u32(0))),
    "alignment_13": ("general.alignment = 13, not a power of two", _kv("general.alignment", U32, u32(13))),
    "alignment_int32": (
        "general.alignment typed int32 (KV_WRONG_TYPE_ALIGN)",
        _kv("general.alignment", I32, u32(32)),
    ),
    "alignment_2_31": (
        "general.alignment = 2^31: data would start past EOF",
        _kv("general.alignment", U32, u32(1 << 31)),
    ),
    "alignment_inconsistent": (
        "general.alignment = 64 over data laid out at 32",
        _kv("general.alignment", U32, u32(64)),
    ),
    # tensor table (test-gguf.cpp TENSORS_*)
    "tensor_name_64_bytes": ("a tensor name of 64 bytes (GGML_MAX_NAME)", _tensor(NORM, name=b"n" * 64)),
    "tensor_name_empty": ("a tensor name of 0 bytes", _tensor(NORM, name=b"")),
    "tensor_name_length_minus_1": (
        "a tensor name claiming 2^64-1 bytes",
        _header(n_tensors=1, body=u64(MINUS_ONE) + b"t"),
    ),
    "duplicate_tensor_name": ("two tensors named token_embd.weight", _edit(_duplicate_tensor_name)),
    "n_dims_5": (
        "a tensor with 5 dimensions (GGML_MAX_DIMS is 4)",
        _tensor(NORM, n_dims=5, dims=[64, 1, 1, 1, 1]),
    ),
    "n_dims_minus_1": ("a dimension count of 2^32-1", _tensor(NORM, n_dims=0xFFFFFFFF)),
    "dim_minus_1": ("a dimension of -1", _tensor(NORM, dims=[MINUS_ONE])),
    "dim_zero": ("a dimension of 0 (TENSORS_ZERO_DIM)", _tensor(EMBD, dims=[64, 0])),
    "dims_product_overflows": (
        "4*INT32_MAX squared elements: past INT64_MAX",
        _tensor(EMBD, dims=[4 * 0x7FFFFFFF] * 2),
    ),
    "nbytes_overflow": (
        "I64 elements whose byte size passes SIZE_MAX",
        _tensor(EMBD, dims=[1 << 31, 1 << 30], ggml_type=GGML_I64),
    ),
    "nbytes_pad_wrap": (
        "a byte size of 2^64-16, which padding wraps to 0",
        _tensors(Tensor(b"wrap", WRAP, 0, 0)),
    ),
    "data_size_sum_overflows": (
        "two tensors whose sizes add past SIZE_MAX",
        _tensors(
            Tensor(b"a", [I8_HUGE], GGML_I8, 0),
            Tensor(b"b", [I8_HUGE], GGML_I8, I8_HUGE),
            data=bytes(range(32)),
        ),
    ),
    "ggml_type_count": ("tensor type 43 (GGML_TYPE_COUNT)", _tensor(NORM, ggml_type=GGML_TYPE_COUNT)),
    "ggml_type_minus_1": ("tensor type 2^32-1", _tensor(NORM, ggml_type=0xFFFFFFFF)),
    "ggml_type_removed": (
        "tensor type 4 (Q4_2, removed from ggml)",
        _tensor(NORM, ggml_type=GGML_Q4_2_REMOVED),
    ),
    "row_not_block_multiple": (
        "a Q4_K tensor with rows of 64 (blocks are 256)",
        _tensor(NORM, ggml_type=GGML_Q4_K),
    ),
    "type_changes_size": (
        "a tensor retyped Q8_0: offsets no longer match",
        _tensor(EMBD, ggml_type=GGML_Q8_0),
    ),
    "type_keeps_size": (
        "a weight retyped I32 (same size): loads, then segfaults",
        _tensor("blk.0.attn_q.weight", ggml_type=GGML_I32),
    ),
    "weight_f64": (
        "a weight stored as F64: loads, then segfaults",
        _retyped("blk.0.attn_q.weight", GGML_F64, "d"),
    ),
    "weight_i8": (
        "a weight stored as I8: loads, then segfaults",
        _retyped("blk.0.attn_k.weight", GGML_I8, "b"),
    ),
    "offset_minus_1": ("a tensor offset of -1", _tensor(OUT, offset=MINUS_ONE)),
    "offset_past_eof": (
        "a tensor offset past the end of the file (CVE shape)",
        _tensor("blk.1.ffn_down.weight", offset=1 << 40),
    ),
    "offset_misaligned": (
        "a tensor offset 1 byte off its aligned place",
        _edit(lambda lay: setattr(lay.tensor(OUT), "offset", lay.tensor(OUT).offset + 1)),
    ),
    "offsets_swapped": ("two tensors' offsets swapped (out of order)", _edit(_swap_offsets)),
    "offsets_overlap": ("two tensors at the same offset", _tensor(OUT, offset=0)),
    # data section (test-gguf.cpp DATA_*) and a cut at each section boundary
    "data_one_byte_short": (
        "the last tensor's data one byte short (DATA_NOT_ENOUGH_DATA)",
        lambda b: b.raw[:-1],
    ),
    "truncated_after_version": ("cut after the version", lambda b: b.raw[:8]),
    "truncated_after_tensor_count": ("cut after the tensor count", lambda b: b.raw[:16]),
    "truncated_after_header": ("cut after the metadata count", _cut("header")),
    "truncated_in_key": ("cut inside the first key", _cut("header", 12)),
    "truncated_in_vocabulary": ("cut in the middle of the vocabulary", _cut("kv " + TOKENS, -1000)),
    "truncated_after_metadata": ("cut after the last metadata entry", _cut_last("kv")),
    "truncated_in_tensor_table": ("cut inside a tensor-info entry", _cut("tensor output.weight", -5)),
    "truncated_after_tensor_table": ("cut after the tensor table, before the padding", _cut_last("tensor")),
    "truncated_at_data": ("cut where the data section starts", _cut("padding")),
    "truncated_in_data": ("cut in the middle of the tensor data", lambda b: b.raw[: len(b.raw) // 2]),
    # model semantics and past CVEs: values llama.cpp asserts on instead of refusing
    "token_length_2_31": (
        "a vocabulary token whose length says 2^31+1 (CVE shape)",
        _token_length(5, (1 << 31) + 1),
    ),
    "token_length_minus_1": ("a vocabulary token whose length field is -1", _token_length(5, MINUS_ONE)),
    "token_repeated": (
        "a vocabulary token equal to another (aborts building the vocabulary)",
        _token_text(299, b"t"),
    ),
    "token_with_nul": (
        "a token 't\\0x', which llama.cpp reads as 't', a token already there",
        _token_text(299, b"t\0x"),
    ),
    "block_count_513": (
        "llama.block_count 513, past LLAMA_MAX_LAYERS (CVE shape)",
        _kv("llama.block_count", U32, u32(513)),
    ),
    "block_count_0": ("llama.block_count 0", _kv("llama.block_count", U32, u32(0))),
    "block_count_u32_max": ("llama.block_count 2^32-1", _kv("llama.block_count", U32, u32(0xFFFFFFFF))),
    "nextn_layers_past_blocks": (
        "nextn_predict_layers 5 with 2 blocks",
        _kv("llama.nextn_predict_layers", U32, u32(5)),
    ),
    "expert_count_2000": (
        "expert_count 2000, past LLAMA_MAX_EXPERTS",
        _kv("llama.expert_count", U32, u32(2000)),
    ),
    "experts_none_used": ("expert_count 4 with no expert_used_count", _kv("llama.expert_count", U32, u32(4))),
    "experts_used_without_experts": (
        "expert_used_count 2 with no experts",
        _kv("llama.expert_used_count", U32, u32(2)),
    ),
    "rope_scaling_unknown": (
        "rope.scaling.type 'warp', unknown to llama.cpp",
        _kv("llama.rope.scaling.type", STRING, gstr("warp")),
    ),
    "norm_epsilon_nan": (
        "layer_norm_rms_epsilon NaN: loads, then aborts decoding",
        _kv("llama.attention.layer_norm_rms_epsilon", F32, struct.pack("<f", float("nan"))),
    ),
    "wpm_byte_tokens": (
        "tokenizer 'bert' over byte tokens (aborts building it)",
        _kv("tokenizer.ggml.model", STRING, gstr("bert")),
    ),
    "architecture_missing": ("no general.architecture", _drop(NAME_ARCH)),
    "architecture_wrong_type": ("general.architecture stored as a uint32", _kv(NAME_ARCH, U32, u32(7))),
}

# Well-formed GGUF that llama.cpp refuses with an error of its own.
LLAMA_CPP: dict[str, tuple[str, Build]] = {
    "n_tensors_one_too_few": ("one tensor fewer claimed than written", _count("n_tensors", -1)),
    "array_of_arrays": (
        "an array of arrays, which llama.cpp's reader refuses",
        _kv("general.tags", ARRAY, _array(ARRAY, [_array(U8, [b"\1"])])),
    ),
    "shape_mismatch": (
        "token_embd transposed: a shape the architecture does not expect",
        _tensor(EMBD, dims=[300, 64]),
    ),
    "missing_tensor": ("the last layer's ffn_down is missing", _edit(lambda lay: lay.tensors.pop())),
    "block_count_3": ("llama.block_count 3 with tensors for 2 blocks", _kv("llama.block_count", U32, u32(3))),
    "head_count_array_too_long": (
        "a per-layer head count of 513 entries",
        _kv("llama.attention.head_count", ARRAY, _array(U32, [u32(4)] * 513)),
    ),
    "architecture_unknown": ("general.architecture 'skynet'", _kv(NAME_ARCH, STRING, gstr("skynet"))),
    "embedding_length_mismatch": (
        "embedding_length 96 over 64-wide tensors",
        _kv("llama.embedding_length", U32, u32(96)),
    ),
    "tokenizer_unknown": ("tokenizer.ggml.model 'nope'", _kv("tokenizer.ggml.model", STRING, gstr("nope"))),
    "vocabulary_missing": ("no tokenizer.ggml.tokens", _drop(TOKENS)),
    "token_types_short": (
        "fewer token types than tokens",
        _kv("tokenizer.ggml.token_type", ARRAY, _array(I32, [u32(1)] * 10)),
    ),
}

# Hostile chat templates: name -> (source, what it does); the sandbox must stop each in bounded time.
TEMPLATES: dict[str, tuple[str, str]] = {
    "template_mro_subclasses": (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "walks from a string to every class in the interpreter",
    ),
    "template_cycler_globals": (
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "reaches os through a helper's __globals__ (CVE-2024-34359's shape)",
    ),
    "template_namespace_globals": (
        "{{ namespace.__init__.__globals__['sys'].modules['os'].system('id') }}",
        "reaches sys.modules through namespace's __globals__",
    ),
    "template_format_attribute": (
        "{{ '{0.__class__.__base__.__subclasses__}'.format('') }}",
        "reads dunder attributes through str.format's field syntax",
    ),
    "template_context_internals": (
        "{{ self._TemplateReference__context.environment.__class__ }}",
        "reaches the render context through `self`",
    ),
    "template_range_billion": ("{% for i in range(1000000000) %}x{% endfor %}", "loops a billion times"),
    "template_nested_loops": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "renders forever in loops that each stay under the range cap",
    ),
    "template_macro_recursion": (
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recurses without end",
    ),
    "template_recursive_loop": (
        "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
        "re-enters a recursive loop over the same list forever",
    ),
    "template_string_bomb": ("{{ 'x' * 10000000000 }}", "builds a 10 GB string in one step"),
    "template_power_bomb": ("{{ 10 ** 1000000 }}", "computes a million-digit integer"),
    "template_squaring_bomb": (
        "{% set ns = namespace(x=2) %}{% for i in range(40) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
        "squares a number 40 times",
    ),
    "template_doubling_bomb": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "doubles a string 64 times",
    ),
    "template_syntax_error": ("{% for %}{{ messages", "is not valid jinja"),
    "template_too_long": ("x" * 1_100_000, "is over a megabyte of template source"),
}
UNSUPPORTED = frozenset({"version_1", "version_future", "version_big_endian", "architecture_unknown"})


def _error(name: str, stage: Stage) -> type[CandorError]:
    if name in UNSUPPORTED:
        return UnsupportedModel
    return {"preflight": InvalidModelFile, "llama.cpp": ModelLoadError, "template": TemplateError}[stage]


def _template(source: str) -> Build:
    return _kv("tokenizer.chat_template", STRING, gstr(source))


CASES: tuple[Case, ...] = (
    *(Case(n, what, "preflight", build, _error(n, "preflight")) for n, (what, build) in PREFLIGHT.items()),
    *(Case(n, what, "llama.cpp", build, _error(n, "llama.cpp")) for n, (what, build) in LLAMA_CPP.items()),
    *(
        Case(n, f"a chat template that {what}", "template", _template(src), TemplateError)
        for n, (src, what) in TEMPLATES.items()
    ),
)

# Changes that leave a file well-formed: a validator must still accept them.
HARMLESS: dict[str, Build] = {
    "renamed": _kv("general.name", STRING, gstr("A Different Name, Longer Than Before")),
    "extra_key": _kv("candor.test.extra", U32, u32(7)),
    "extra_string_array": _kv("general.tags", ARRAY, _array(STRING, [gstr("a"), gstr("b")])),
    "alignment_explicit_32": _kv("general.alignment", U32, u32(32)),
}


def write_corpus(folder: Path, *, base: Base | None = None) -> list[tuple[Case, Path]]:
    """Write every case (and the fixture model it was cut from) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    base = base or Base.make(folder)
    return [(case, case.write(base, folder)) for case in CASES]
