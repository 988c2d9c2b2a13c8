"""The memory plan: what llama.cpp will allocate for a model and a context, computed before loading anything.

Everything comes from the GGUF header (tensor sizes, layers, heads, head sizes, sliding windows, vocabulary)
and from llama.cpp's own sizing rules, mirrored here with the file and function each one comes from
(llama.cpp as vendored in llama-cpp-python 0.3.36). No constant is fitted to a particular model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from candor.errors import InvalidParameter
from candor.gguf_file import GGML_TYPES, TOKENS_KEY, GGUFHeader, TensorInfo, read_gguf
from candor.identity import ModelCard

MIB = 1 << 20
# KV cache element types (ggml type ids, as candor.engine.context.KV_TYPES passes them to llama.cpp)
KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}
CTX_PAD = 256  # llama-context.cpp: cparams.n_ctx = GGML_PAD(n_ctx, 256); the SWA cache is padded alike
TENSOR_ALIGNMENT = 32  # ggml-cpu's buffer alignment: every graph tensor is padded to it (ggml-alloc.c)
MAX_LAYERS = 4096
DECIDED_BY = (
    "candor's plan (llama.cpp's own fitter, common_fit_params behind llama-server's --fit and "
    "llama_params_fit, lives in llama.cpp's common library, which llama-cpp-python does not expose)"
)


@dataclass(frozen=True)
class SwaRule:
    """How one architecture marks its sliding-window layers (src/models/<arch>.cpp, load_arch_hparams)."""

    pattern: int  # every `pattern`-th layer is global; 0: every layer slides
    dense_first: bool = False  # the global layer opens each group instead of closing it
    window: int = 0  # window used when the file names none (0: the file must name one)
    needs_window: bool = False  # SWA only when the file names a window > 0
    fixed_window: int = 0  # llama.cpp overrides the file's window with this


# llama_hparams::set_swa_pattern is_swa(il) = il % n < n - 1 (or il % n != 0 with dense_first); a
# `<arch>.attention.sliding_window_pattern` array in the file overrides the pattern (load_swa_pattern).
SWA_RULES: dict[str, SwaRule] = {
    "gemma2": SwaRule(2, window=4096),
    "gemma3": SwaRule(6, needs_window=True),
    "gemma3n": SwaRule(5),
    "cohere2": SwaRule(4),
    "cohere2moe": SwaRule(4, dense_first=True),
    "gpt-oss": SwaRule(2),
    "afmoe": SwaRule(4, needs_window=True),
    "olmo2": SwaRule(4, needs_window=True),
    "mellum": SwaRule(4, needs_window=True),
    "plamo3": SwaRule(8, needs_window=True),
    "laguna": SwaRule(4, dense_first=True, needs_window=True),
    "smallthinker": SwaRule(4, dense_first=True, needs_window=True, fixed_window=4096),
    "exaone-moe": SwaRule(4, window=128),
    "muse-glimmer": SwaRule(4),
    "llama4": SwaRule(4, fixed_window=8192),  # chunked attention; a window of 0 in the file turns it off
}
# architectures whose sliding layers come only from the file's per-layer pattern array
SWA_ARRAY_ONLY = {"gemma4", "granite_swa", "mimo2", "step35", "dots3note", "maple", "spark2_5"}
# architectures that keep no KV cache (llama_model::create_memory returns nullptr)
NO_KV_ARCHS = {
    "bert", "jina-bert-v2", "jina-bert-v3", "nomic-bert", "nomic-bert-moe", "neo-bert", "eurobert",
    "modern-bert", "gemma-embedding", "wavtokenizer-dec", "dream", "llada", "llada-moe", "rnd1",
}  # fmt: skip
RECURRENT_KEYS = (".ssm.", ".wkv.", ".shortconv.", ".time_mix_", ".rwkv")
# tensors read with GET_ROWS, never multiplied: they never go to the CPU repack buffer
INPUT_TENSORS = ("token_embd.", "token_types.", "position_embd.", "per_layer_token_embd.")


@dataclass(frozen=True)
class Part:
    """One allocation: what it holds, where, how many bytes, and how that was decided."""

    name: str
    kind: str  # "weights", "kv", "compute" or "output"
    device: str  # "CPU" or "GPU"
    bytes: int
    verified: bool  # False: planned for a GPU that this llama.cpp build has no backend for
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, sizes in bytes and MiB."""
        return {**asdict(self), "mib": round(self.bytes / MIB, 2)}


@dataclass(frozen=True)
class MemoryPlan:
    """What loading a model with one context will allocate, part by part."""

    model: str
    architecture: str | None
    ctx: int  # as asked
    n_ctx: int  # as llama.cpp pads it
    n_ctx_seq: int
    parallel: int
    kv_type: str
    n_batch: int
    n_ubatch: int
    gpu: bool  # a GPU backend is present
    gpu_layers: int  # layers (the output layer counts as one) placed on the GPU
    n_layer: int
    decided_by: str
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        """Bytes of every part on every device."""
        return sum(p.bytes for p in self.parts)

    def bytes_of(self, kind: str | None = None, device: str | None = None) -> int:
        """Bytes of the parts of one kind and/or on one device."""
        return sum(p.bytes for p in self.parts if kind in (None, p.kind) and device in (None, p.device))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `candor plan --json`."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("parts", "notes")}
        return {
            **data,
            "parts": [p.to_dict() for p in self.parts],
            "by_device": {d: self.bytes_of(device=d) for d in sorted({p.device for p in self.parts})},
            "total_bytes": self.total,
            "total_mib": round(self.total / MIB, 2),
            "notes": list(self.notes),
        }


# --- the model's shapes, as llama_model::load_hparams reads them --------------------------------------


@dataclass(frozen=True)
class Shapes:
    """The hyperparameters that size llama.cpp's buffers, one entry per layer where they may vary."""

    arch: str
    n_layer: int  # block_count (llama.cpp's n_layer_all)
    n_nextn: int  # trailing MTP layers, outside the main context's KV cache
    n_embd: int
    n_vocab: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_ff: tuple[int, ...]
    head_k: tuple[int, ...]  # key head size per layer (SWA layers may differ)
    head_v: tuple[int, ...]
    is_swa: tuple[bool, ...]
    n_swa: int
    has_kv: tuple[bool, ...]
    kv_lora_rank: int  # MLA (DeepSeek-style): K holds the compressed latent, V is a view of it
    n_rot: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    recurrent: bool


def _scalar(meta: Mapping[str, Any], key: str, default: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _per_layer(meta: Mapping[str, Any], key: str, n: int, default: int) -> tuple[int, ...]:
    """A key that is one number or one number per layer (llama_model_loader::get_key_or_arr)."""
    value = meta.get(key)
    if isinstance(value, tuple) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(int(v) for v in value)
    return (_scalar(meta, key, default),) * n


def _swa_layers(
    arch: str, meta: Mapping[str, Any], n_layer: int, n_nextn: int
) -> tuple[tuple[bool, ...], int]:
    """Which layers slide, and the window (llama_model_base::load_swa_pattern, the per-arch rules)."""
    none = ((False,) * n_layer, 0)
    key = f"{arch}.attention.sliding_window"
    window = meta.get(key)
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    rule = SWA_RULES.get(arch)
    if arch == "exaone4" and n_layer == 64:  # only the 32B model interleaves (models/exaone4.cpp)
        rule = SwaRule(4, window=4096)
    if rule is None:
        if arch in SWA_ARRAY_ONLY and isinstance(pattern, tuple) and isinstance(window, int) and window > 0:
            return tuple(bool(v) for v in pattern[:n_layer]) + (False,) * (n_layer - len(pattern)), window
        return none
    if rule.needs_window and not (isinstance(window, int) and window > 0):
        return none
    if arch == "llama4" and window == 0:
        return none
    n_swa = rule.fixed_window or (window if isinstance(window, int) and window > 0 else rule.window)
    if isinstance(pattern, tuple) and len(pattern) >= 1 and all(isinstance(v, (bool, int)) for v in pattern):
        flags = tuple(bool(v) for v in pattern[:n_layer]) + (False,) * max(0, n_layer - len(pattern))
        return flags, n_swa
    n = _scalar(meta, f"{arch}.attention.sliding_window_pattern", rule.pattern)
    n_main = n_layer - n_nextn  # set_swa_pattern marks only the main layers
    if rule.dense_first:
        flags = tuple(il < n_main and (n == 0 or il % n != 0) for il in range(n_layer))
    else:
        flags = tuple(il < n_main and (n == 0 or il % n < n - 1) for il in range(n_layer))
    return flags, n_swa


def read_shapes(header: GGUFHeader) -> Shapes:
    """Read the sizing hyperparameters from a GGUF header, with llama.cpp's defaults."""
    meta = header.metadata
    arch = str(meta.get("general.architecture") or "")
    a = f"{arch}."
    n_layer = _scalar(meta, a + "block_count", 0)
    if not 0 < n_layer <= MAX_LAYERS:
        raise InvalidParameter(
            f"{header.path}: no usable {a}block_count; this file is not a model llama.cpp runs"
        )
    n_nextn = min(_scalar(meta, a + "nextn_predict_layers", 0), n_layer)
    n_embd = _scalar(meta, a + "embedding_length", 0)
    n_head = _per_layer(meta, a + "attention.head_count", n_layer, 0)
    n_head_kv = _per_layer(meta, a + "attention.head_count_kv", n_layer, -1)
    n_head_kv = tuple(h if kv < 0 else kv for h, kv in zip(n_head, n_head_kv, strict=True))
    base_head = n_embd // n_head[0] if n_head[0] else 0
    head_k = _scalar(meta, a + "attention.key_length", base_head)
    head_v = _scalar(meta, a + "attention.value_length", base_head)
    head_k_swa = _scalar(meta, a + "attention.key_length_swa", head_k)
    head_v_swa = _scalar(meta, a + "attention.value_length_swa", head_v)
    is_swa, n_swa = _swa_layers(arch, meta, n_layer, n_nextn)
    has_kv = [True] * n_layer
    shared = _scalar(meta, a + "attention.shared_kv_layers", 0)
    kv_from_start = 20 if arch == "gemma3n" else (n_layer - shared if arch == "gemma4" and shared else -1)
    if kv_from_start >= 0:  # later layers reuse earlier layers' KV (llama_hparams::has_kv)
        has_kv = [il < kv_from_start for il in range(n_layer)]
    n_vocab = header.array_length(TOKENS_KEY) or _scalar(meta, a + "vocab_size", 0)
    recurrent = any(any(part in k for part in RECURRENT_KEYS) for k in meta if k.startswith(a))
    return Shapes(
        arch=arch,
        n_layer=n_layer,
        n_nextn=n_nextn,
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=_per_layer(meta, a + "feed_forward_length", n_layer, 0),
        head_k=tuple(head_k_swa if s else head_k for s in is_swa),
        head_v=tuple(head_v_swa if s else head_v for s in is_swa),
        is_swa=is_swa,
        n_swa=n_swa,
        has_kv=tuple(has_kv),
        kv_lora_rank=_scalar(meta, a + "attention.kv_lora_rank", 0),
        n_rot=_scalar(meta, a + "rope.dimension_count", head_k),
        n_expert=_scalar(meta, a + "expert_count", 0),
        n_expert_used=_scalar(meta, a + "expert_used_count", 0),
        n_ff_exp=_scalar(meta, a + "expert_feed_forward_length", 0),
        recurrent=recurrent,
    )


# --- context sizes (llama_context::llama_context) ----------------------------------------------------


@dataclass(frozen=True)
class ContextSizes:
    """The sizes llama.cpp derives from the context parameters."""

    n_ctx: int
    n_ctx_seq: int  # cells per KV stream
    n_stream: int
    n_batch: int
    n_ubatch: int
    n_outputs_max: int


def context_sizes(
    ctx: int, *, parallel: int, n_batch: int, n_ubatch: int, unified: bool, n_outputs_max: int = 0
) -> ContextSizes:
    """Mirror llama_context's cparams: batch limited by the context, context padded to 256."""
    batch = min(ctx, n_batch)  # causal attention: n_batch = min(n_ctx, n_batch), before padding
    ubatch = min(batch, n_ubatch)
    outputs = min(n_outputs_max, batch) if n_outputs_max > 0 else batch  # 0: llama.cpp's default, n_batch
    n_ctx = -(-ctx // CTX_PAD) * CTX_PAD
    if unified:
        return ContextSizes(n_ctx, n_ctx, 1, batch, ubatch, outputs)
    n_ctx_seq = -(-(n_ctx // parallel) // CTX_PAD) * CTX_PAD
    return ContextSizes(n_ctx_seq * parallel, n_ctx_seq, parallel, batch, ubatch, outputs)


def row_bytes(ggml_type: int, n: int) -> int:
    """Bytes of one row of n elements of a ggml type (ggml_row_size)."""
    t = GGML_TYPES[ggml_type]
    return n // t.block_size * t.type_size


# --- KV cache (llama_kv_cache, llama_kv_cache_iswa) ---------------------------------------------------


@dataclass(frozen=True)
class KVCache:
    """One KV cache: its cells, its layers and its bytes."""

    name: str
    cells: int
    layers: tuple[int, ...]
    layer_bytes: tuple[int, ...]  # per layer, all cells and streams

    @property
    def bytes(self) -> int:
        """Bytes of the whole cache."""
        return sum(self.layer_bytes)


def kv_caches(
    sh: Shapes, sizes: ContextSizes, *, kv_type: str, parallel: int, swa_full: bool
) -> list[KVCache]:
    """The KV caches llama.cpp creates: one, or a global one and a sliding-window one (iSWA)."""
    if sh.arch in NO_KV_ARCHS:
        return []
    type_id = KV_TYPES[kv_type]
    block = GGML_TYPES[type_id].block_size
    cells = sizes.n_ctx_seq
    iswa = any(sh.is_swa)
    swa_cells = cells
    if iswa and not swa_full:  # llama_kv_cache_iswa: min(size, n_swa * n_seq + n_ubatch), padded to 256
        seqs = parallel if sizes.n_stream == 1 else 1
        swa_cells = min(cells, -(-(sh.n_swa * seqs + sizes.n_ubatch) // CTX_PAD) * CTX_PAD)
    groups: dict[bool, list[int]] = {False: [], True: []}
    per_layer: dict[int, int] = {}
    for il in range(sh.n_layer - sh.n_nextn):  # the MTP layers belong to a separate draft context
        if not sh.has_kv[il]:
            continue
        if sh.kv_lora_rank:  # MLA: one "head" holding the latent and the rope part; V views it
            k_row, v_row = sh.kv_lora_rank + sh.n_rot, 0
        else:
            k_row, v_row = sh.head_k[il] * sh.n_head_kv[il], sh.head_v[il] * sh.n_head_kv[il]
        for head in (sh.head_k[il], sh.head_v[il]):
            if head % block:
                raise InvalidParameter(
                    f"KV type {kv_type} packs {block} values per block, and this model's heads hold {head}; "
                    "use --kv-type f16"
                )
        swa = iswa and sh.is_swa[il]
        per_layer[il] = row_bytes(type_id, k_row) + row_bytes(type_id, v_row)
        groups[swa].append(il)
    out = []
    for swa, layers in groups.items():
        if not layers:
            continue
        n = swa_cells if swa else cells
        name = (
            "KV cache (sliding-window layers)"
            if swa
            else ("KV cache (global layers)" if iswa else "KV cache")
        )
        out.append(
            KVCache(name, n, tuple(layers), tuple(per_layer[il] * n * sizes.n_stream for il in layers))
        )
    return out


# --- the compute buffer: ggml-alloc replayed over the worst-case graph --------------------------------


class _View(int):
    """A source read through a view (reshape, permute): ggml-alloc never reuses it in place."""


@dataclass
class _Node:
    size: int
    srcs: tuple[int, ...]
    inplace: bool = False
    input: bool = False
    output: bool = False


class _Graph:
    """The tensors of one graph in execution order, enough for ggml-alloc's bookkeeping."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def input(self, size: int) -> int:
        self.nodes.append(_Node(size, (), input=True))
        return len(self.nodes) - 1

    def op(self, size: int, *srcs: int, inplace: bool = False, output: bool = False) -> int:
        self.nodes.append(_Node(size, srcs, inplace, output=output))
        return len(self.nodes) - 1


class _Allocator:
    """ggml_dyn_tallocr (ggml-alloc.c): best fit among inner free blocks, else the tail; tracks the peak."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.blocks: list[list[int]] = [[0, 1 << 62]]  # [offset, size], sorted; the last one is the tail
        self.peak = 0

    def alloc(self, size: int) -> int:
        size = -(-size // self.alignment) * self.alignment
        best, best_size = len(self.blocks) - 1, None
        for i, (_, free) in enumerate(self.blocks[:-1]):
            if free >= size and (best_size is None or free <= best_size):
                best, best_size = i, free
        block = self.blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.blocks[best]
        self.peak = max(self.peak, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = -(-size // self.alignment) * self.alignment
        blocks = self.blocks
        for i, block in enumerate(blocks):
            if block[0] + block[1] == offset:
                block[1] += size
                if i + 1 < len(blocks) and block[0] + block[1] == blocks[i + 1][0]:
                    block[1] += blocks.pop(i + 1)[1]
                return
            if offset + size == block[0]:
                block[0], block[1] = offset, block[1] + size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == offset:
                    blocks[i - 1][1] += blocks.pop(i)[1]
                return
        i = next((j for j, b in enumerate(blocks) if b[0] > offset), len(blocks))
        blocks.insert(i, [offset, size])


def replay(graph: _Graph, alignment: int = TENSOR_ALIGNMENT) -> int:
    """Peak bytes of ggml_gallocr_alloc_graph_impl: inputs first, parents freed after their last use."""
    nodes = graph.nodes
    alloc = _Allocator(alignment)
    children = [0] * len(nodes)
    where = [0] * len(nodes)
    live = [False] * len(nodes)
    for node in nodes:
        for s in node.srcs:
            children[s] += 1
    for i, node in enumerate(nodes):
        if node.input:
            where[i], live[i] = alloc.alloc(node.size), True
    for i, node in enumerate(nodes):
        if node.input:
            continue
        if node.size:
            reuse = None
            if node.inplace:  # a parent read directly, by this node only, of the same size
                reuse = next(
                    (s for s in node.srcs if type(s) is int and live[s] and children[s] == 1
                     and not nodes[s].output and nodes[s].size == node.size),
                    None,
                )  # fmt: skip
            if reuse is None:
                where[i] = alloc.alloc(node.size)
            else:
                where[i], live[reuse] = where[reuse], False
            live[i] = True
        for s in node.srcs:
            children[s] -= 1
            if children[s] == 0 and live[s] and not nodes[s].output:
                alloc.free(where[s], nodes[s].size)
                live[s] = False
    return alloc.peak


@dataclass(frozen=True)
class GraphShape:
    """Which variant of the decoder graph the model builds (read from its tensor names)."""

    qk_norm: bool
    post_norms: bool
    gated_ffn: bool
    fused_qkv: bool
    shared_expert: bool


def graph_shape(tensors: Sequence[TensorInfo]) -> GraphShape:
    """Tell the graph variant from the tensors of the first block."""
    names = {t.name for t in tensors if t.name.startswith("blk.0.")}
    return GraphShape(
        qk_norm="blk.0.attn_q_norm.weight" in names,
        post_norms="blk.0.post_attention_norm.weight" in names or "blk.0.post_ffw_norm.weight" in names,
        gated_ffn="blk.0.ffn_gate.weight" in names or "blk.0.ffn_gate_exps.weight" in names,
        fused_qkv="blk.0.attn_qkv.weight" in names,
        shared_expert="blk.0.ffn_up_shexp.weight" in names,
    )


def compute_peak(
    sh: Shapes,
    gs: GraphShape,
    caches: Sequence[KVCache],
    sizes: ContextSizes,
    *,
    parallel: int,
    kv_type: str,
    flash_attn: bool = True,
) -> int:
    """Bytes of the compute buffer: ggml-alloc's peak over the prompt-sized worst-case graph.

    llama_context::sched_reserve builds the graph for n_tokens = min(n_ctx, n_ubatch) (rounded up to a
    multiple of the sequences) with n_outputs = min(n_tokens, n_outputs_max) logits rows, against the
    whole KV cache (llama_kv_cache_context: n_kv = cache size), and sizes the buffer to ggml-alloc's
    high-water mark.
    """
    t0 = min(sizes.n_ctx, sizes.n_ubatch)
    T = -(-t0 // parallel) * parallel
    t_out = min(t0, sizes.n_outputs_max)
    f32, e = 4, sh.n_embd * T * 4
    quant = kv_type != "f16"
    cache_of = {il: c for c, cache in enumerate(caches) for il in cache.layers}
    rot_k = quant and all(sh.head_k[il] % 64 == 0 for il in cache_of)  # llama_kv_cache: attn_rot_k
    rot_v = quant and all(sh.head_v[il] % 64 == 0 for il in cache_of)
    nrot = 64
    while rot_k and all(sh.head_k[il] % (nrot * 2) == 0 for il in cache_of):
        nrot *= 2
    v_max = max(h * n for h, n in zip(sh.head_v, sh.n_head_kv, strict=True))  # n_embd_v_gqa_max
    g = _Graph()
    tokens = g.input(T * 4)
    g.input(e)  # inp_embd: the embeddings input, in every graph, read by no node here, so never freed
    pos = -1
    inputs = {}  # per cache, in llama.cpp's leaf order (first layer first): k rotation, (positions),
    for c in sorted(range(len(caches)), key=lambda c: caches[c].layers[0]):  # v rotation, indices, mask
        k_rot = g.input(nrot * nrot * f32) if rot_k else -1
        pos = g.input(T * 4) if pos < 0 else pos
        v_rot = g.input(64 * 64 * f32) if rot_v else -1
        k_idx, v_idx = g.input(T * 8), g.input(T * 8 * (1 if flash_attn else v_max))  # V transposed
        mask = g.input(caches[c].cells * T * (2 if flash_attn else 4))
        inputs[c] = (k_idx, v_idx, mask, caches[c].cells, k_rot, v_rot)
    pos = g.input(T * 4) if pos < 0 else pos
    out_ids = g.input(t_out * 4)
    x = g.op(e, tokens)
    n_main = sh.n_layer - sh.n_nextn
    iswa = len(caches) > 1
    for il in range(n_main):
        last = il == n_main - 1
        # a layer reading another layer's KV (shared KV) uses the first cache's inputs
        k_idx, v_idx, mask, n_kv, k_rot, v_rot = (
            inputs[cache_of.get(il, 0)] if inputs else (-1, -1, -1, 0, -1, -1)
        )
        qs = sh.n_head[il] * sh.head_k[il] * T * f32
        ks = sh.n_head_kv[il] * sh.head_k[il] * T * f32
        vs = sh.n_head_kv[il] * sh.head_v[il] * T * f32
        os_ = sh.n_head[il] * sh.head_v[il] * T * f32
        if sh.kv_lora_rank:
            ks = vs = (sh.kv_lora_rank + sh.n_rot) * T * f32
        h = g.op(e, x)  # attn_norm: the residual keeps x alive, so no reuse
        h = g.op(e, h, inplace=True)
        qkv = g.op(qs + ks + vs, h) if gs.fused_qkv else -1

        def project(size: int, roped: bool, rot: int) -> int:
            t = g.op(size, _View(qkv)) if gs.fused_qkv else g.op(size, h)  # noqa: B023 - called right away
            if gs.qk_norm and roped:  # the norm reads a reshape (a new tensor); the weight multiply reuses it
                t = g.op(size, g.op(size, _View(t)), inplace=True)
                t = g.op(size, t, pos, inplace=True)
            elif roped:
                t = g.op(size, _View(t), pos, inplace=True)
            return g.op(size, _View(t), rot) if rot >= 0 else t

        if iswa:  # build_attn for iSWA expands q, k, v; the plain one q, v, k (llama-graph.cpp)
            q = project(qs, True, k_rot)
            k = project(ks, True, k_rot)
            v = project(vs, False, v_rot)
        else:
            q = project(qs, True, k_rot)
            v = project(vs, False, v_rot)
            k = project(ks, True, k_rot)
        if k_idx >= 0:
            g.op(0, _View(k), k_idx)  # SET_ROWS into the cache: a view of the KV buffer, not allocated here
            g.op(0, _View(v), v_idx)
        if flash_attn:
            o = g.op(os_, _View(q), *([mask] if mask >= 0 else []))
        else:
            kq = g.op(n_kv * T * sh.n_head[il] * f32, _View(q))
            kq = g.op(n_kv * T * sh.n_head[il] * f32, kq, *([mask] if mask >= 0 else []), inplace=True)
            o = g.op(os_, _View(g.op(os_, kq)))
        if rot_v:
            o = g.op(os_, _View(o), v_rot)
        a = g.op(e, _View(o))
        if gs.post_norms:
            a = g.op(e, g.op(e, a, inplace=True), inplace=True)
        if last:  # only the rows that produce outputs go on (llama-graph: inp_out_ids)
            e = sh.n_embd * t_out * f32
            a, x = g.op(e, a, out_ids), g.op(e, x, out_ids)
        r = g.op(e, a, x, inplace=True)
        h = g.op(e, g.op(e, r), inplace=True)
        rows = t_out if last else T
        d = _ffn(g, sh, gs, il, h, e, rows)
        if gs.post_norms:
            d = g.op(e, g.op(e, d, inplace=True), inplace=True)
        x = g.op(e, d, r, inplace=True)
    x = g.op(e, g.op(e, x, inplace=True), inplace=True, output=True)  # result_norm
    g.op(sh.n_vocab * t_out * f32, x, output=True)  # result_output: the logits
    return replay(g)


def _ffn(g: _Graph, sh: Shapes, gs: GraphShape, il: int, h: int, e: int, rows: int) -> int:
    """The feed-forward block: gate and up, their product, down (or the routed experts)."""
    f32 = 4
    if sh.n_expert and sh.n_expert_used:
        used = sh.n_expert_used
        fe = (sh.n_ff_exp or sh.n_ff[il]) * used * rows * f32
        probs = g.op(sh.n_expert * rows * f32, g.op(sh.n_expert * rows * f32, h), inplace=True)
        sel = g.op(used * rows * 4, _View(probs))
        w = g.op(used * rows * f32, _View(probs), sel)
        up = g.op(fe, h, sel)
        act = g.op(fe, g.op(fe, h, sel), up) if gs.gated_ffn else g.op(fe, up, inplace=True)
        d = g.op(sh.n_embd * used * rows * f32, act, sel)
        d = g.op(sh.n_embd * used * rows * f32, d, w, inplace=True)
        out = g.op(e, _View(d))
        if gs.shared_expert:
            f = sh.n_ff[il] * rows * f32
            s = g.op(f, g.op(f, h), g.op(f, h))
            out = g.op(e, out, g.op(e, s), inplace=True)
        return out
    f = sh.n_ff[il] * rows * f32
    if gs.gated_ffn:
        gate = g.op(f, h)
        act = g.op(f, gate, g.op(f, h))  # SWIGLU / GEGLU: a new tensor
    else:
        act = g.op(f, g.op(f, h), inplace=True)
    return g.op(e, act)


# --- weights per device (llama_model_base::load_tensors) ----------------------------------------------


def layer_of(name: str, n_layer: int) -> int:
    """The layer a tensor belongs to: -1 for the input layer, n_layer for the output layer."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    return -1 if name.startswith(INPUT_TENSORS) else n_layer


def repack_types(cpu_features: Iterable[str]) -> dict[str, int]:
    """Quantized types ggml-cpu repacks, given the CPU features llama.cpp reports -> the row multiple needed.

    ggml_repack_get_optimal_repack_type (ggml-cpu/repack.cpp): AVX2 repacks Q4_0, Q4_K, IQ4_NL and MXFP4
    (rows % 8), AVX-512 also Q2_K; ARM NEON with dot products repacks Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4,
    Q8_0 and Q1_0. Nothing is repacked when the build has no REPACK.
    """
    features = set(cpu_features)
    if "REPACK" not in features:
        return {}
    found: dict[str, int] = {}
    if "AVX2" in features:
        found.update({"Q4_0": 8, "Q4_K": 8, "IQ4_NL": 8, "MXFP4": 8})
    if "AVX512" in features:
        found["Q2_K"] = 8
    if "NEON" in features and ({"DOTPROD", "MATMUL_INT8"} & features):
        found.update(
            {"Q4_0": 4, "Q4_K": 8, "Q5_K": 8, "Q6_K": 8, "IQ4_NL": 4, "MXFP4": 4, "Q8_0": 4, "Q1_0": 4}
        )
    return found


def _llama_cpu_features() -> tuple[str, ...]:
    from candor.engine.build_info import build_info  # loads llama.cpp (not a model): the build decides

    return build_info().cpu_features


def _weight_parts(
    header: GGUFHeader, n_layer: int, i_gpu_start: int, gpu: bool, repack: Mapping[str, int]
) -> list[Part]:
    """Weights on the CPU (memory-mapped), their CPU repack copies, and those offloaded to a GPU."""
    first, last, repacked, on_gpu = header.file_size, 0, 0, 0
    tied = all(t.name != "output.weight" for t in header.tensors)
    output_on_cpu = n_layer < i_gpu_start
    for t in header.tensors:
        if layer_of(t.name, n_layer) >= i_gpu_start:  # the input layer (-1) never leaves the CPU
            on_gpu += t.n_bytes
            continue
        rows = repack.get(t.type_name)
        matmul = len(t.dims) == 2 or (len(t.dims) == 3 and "_exps." in t.name)
        duplicate = tied and output_on_cpu and t.name == "token_embd.weight"  # the output reuses it
        if rows and matmul and (duplicate or not t.name.startswith(INPUT_TENSORS)) and t.dims[1] % rows == 0:
            repacked += t.n_bytes  # repacking keeps the block size: same bytes, in a buffer of their own
            if not duplicate:
                continue
        first = min(first, header.data_offset + t.offset)  # llama_model_loader::get_mapping_range
        last = max(last, header.data_offset + t.offset + t.n_bytes)
    if tied and not output_on_cpu:  # an offloaded output layer gets its own copy of token_embd
        on_gpu += next(t.n_bytes for t in header.tensors if t.name == "token_embd.weight")
    mapped = Part(
        "weights", "weights", "CPU", max(0, last - first), True,
        "the span of the file holding the CPU tensors, memory-mapped (CPU_Mapped)",
    )  # fmt: skip
    parts = [mapped]
    if repacked:
        parts.append(
            Part(
                "weights (CPU repack copy)", "weights", "CPU", repacked, True,
                "quantized matrices ggml-cpu repacks for this CPU's SIMD kernels (CPU_REPACK)",
            )
        )  # fmt: skip
    if on_gpu:
        where = (
            "on the GPU" if gpu else "no GPU backend in this llama.cpp build: llama.cpp keeps them on the CPU"
        )
        parts.append(Part("weights", "weights", "GPU", on_gpu, gpu, f"offloaded layers ({where})"))
    return parts


# --- the plan ------------------------------------------------------------------------------------------


def memory_plan(
    card: ModelCard,
    *,
    ctx: int,
    parallel: int = 1,
    kv_type: str = "f16",
    n_batch: int = 512,
    gpu_layers: int = 0,
    gpu: bool = False,
    kv_unified: bool = True,
    swa_full: bool = True,
    flash_attn: bool = True,
    embeddings: bool = False,
    backend_samplers: bool = False,
    n_outputs_max: int = 0,
    header: GGUFHeader | None = None,
    cpu_features: Iterable[str] | None = None,
) -> MemoryPlan:
    """Plan the memory of a model plus one context (n_ubatch = n_batch, as candor's engine sets it).

    Args:
        card: the model (its file is read again for the tensor table unless `header` is given).
        ctx: context tokens, shared by all sequences when kv_unified.
        parallel: sequences (slots) in the context.
        kv_type: KV cache element type: f16, q8_0 or q4_0.
        n_batch: tokens per llama_decode; also the micro-batch size.
        gpu_layers: layers to offload (-1: all, the output layer included); 0 keeps everything on the CPU.
        gpu: whether this llama.cpp build has a GPU backend; GPU parts are unverified without one.
        swa_full: llama.cpp's default: the sliding-window cache holds the whole context.
        flash_attn: llama.cpp's "auto" enables it on the CPU and on GPUs that support it.
        embeddings: an embeddings context (adds an embedding row per output).
        backend_samplers: sampler chains run by llama.cpp (adds probabilities and candidates per output).
        n_outputs_max: most logits rows one llama_decode may ask for (0: llama.cpp's default, n_batch);
            candor's generation contexts use one per sequence, which keeps the compute buffer small.
        cpu_features: the CPU features llama.cpp reports (default: asked of the loaded llama.cpp build).
    Returns:
        The plan, part by part, with its total.
    """
    if kv_type not in KV_TYPES:
        raise InvalidParameter(f"unknown KV type {kv_type!r}; use one of: {', '.join(KV_TYPES)}")
    if ctx < 1 or parallel < 1 or n_batch < 1:
        raise InvalidParameter(f"context {ctx}, parallel {parallel} and batch {n_batch} must all be >= 1")
    header = header or read_gguf(card.path)
    sh = read_shapes(header)
    sizes = context_sizes(
        ctx,
        parallel=parallel,
        n_batch=n_batch,
        n_ubatch=n_batch,
        unified=kv_unified,
        n_outputs_max=n_outputs_max,
    )
    n_gpu = sh.n_layer + 1 if gpu_layers < 0 else min(gpu_layers, sh.n_layer + 1)
    i_gpu_start = sh.n_layer + 1 - n_gpu  # llama.cpp: max(n_layer + 1 - n_gpu_layers, 0); output = n_layer
    repack = repack_types(_llama_cpu_features() if cpu_features is None else cpu_features)
    parts = _weight_parts(header, sh.n_layer, i_gpu_start, gpu, repack)
    notes: list[str] = []
    caches = kv_caches(sh, sizes, kv_type=kv_type, parallel=parallel, swa_full=swa_full)
    for cache in caches:
        split = {"CPU": 0, "GPU": 0}
        for il, n in zip(cache.layers, cache.layer_bytes, strict=True):
            split["GPU" if il >= i_gpu_start else "CPU"] += n
        for device, n in split.items():
            if n:
                detail = f"{cache.cells} cells x {len(cache.layers)} layers x (K+V rows of {kv_type})" + (
                    f" x {sizes.n_stream} streams" if sizes.n_stream > 1 else ""
                )
                parts.append(Part(cache.name, "kv", device, n, device == "CPU" or gpu, detail))
    peak = compute_peak(
        sh,
        graph_shape(header.tensors),
        caches,
        sizes,
        parallel=parallel,
        kv_type=kv_type,
        flash_attn=flash_attn,
    )
    graph = f"ggml-alloc's peak over the {min(sizes.n_ctx, sizes.n_ubatch)}-token worst-case graph"
    if n_gpu:
        parts.append(Part("compute buffer", "compute", "GPU", peak, gpu, graph + " (on the GPU)"))
        host = sh.n_embd * min(sizes.n_ctx, sizes.n_ubatch) * 4 * 2  # the embeddings input and its lookup
        parts.append(
            Part(
                "compute buffer", "compute", "CPU", peak if i_gpu_start > 0 else host, gpu, graph + " (host)"
            )
        )
    else:
        parts.append(Part("compute buffer", "compute", "CPU", peak, True, graph))
    # llama_context::output_reserve(n_seq_max) at creation: logits (+ embeddings, + backend sampling's
    # logits, probabilities, sampled token and candidates) for one output per sequence
    row = sh.n_vocab + (sh.n_embd if embeddings else 0) + (3 * sh.n_vocab + 1 if backend_samplers else 0)
    parts.append(
        Part(
            "output buffer", "output", "CPU", row * parallel * 4, True,
            f"{parallel} output rows of {row} values (llama_context::output_reserve(n_seq_max)); it grows "
            "if one llama_decode asks for more outputs than that",
        )
    )  # fmt: skip
    if sh.recurrent:
        notes.append(f"{sh.arch} keeps a recurrent state that this plan does not count")
    if sh.n_expert:
        notes.append("mixture of experts: the compute buffer is estimated with a simplified expert graph")
    if sh.arch in NO_KV_ARCHS:
        notes.append(f"{sh.arch} keeps no KV cache")
    if n_gpu and not gpu:
        notes.append("no GPU backend in this llama.cpp build: the GPU parts are planned, not verified")
    return MemoryPlan(
        model=str(card.path),
        architecture=sh.arch or None,
        ctx=ctx,
        n_ctx=sizes.n_ctx,
        n_ctx_seq=sizes.n_ctx_seq,
        parallel=parallel,
        kv_type=kv_type,
        n_batch=sizes.n_batch,
        n_ubatch=sizes.n_ubatch,
        gpu=gpu,
        gpu_layers=n_gpu,
        n_layer=sh.n_layer,
        decided_by=DECIDED_BY,
        parts=tuple(parts),
        notes=tuple(notes),
    )


def choose_gpu_layers(card: ModelCard, *, free_gpu_bytes: int, **options: Any) -> MemoryPlan:
    """The plan with the most layers offloaded whose GPU parts fit in `free_gpu_bytes`."""
    header = options.pop("header", None) or read_gguf(card.path)
    n_layer = read_shapes(header).n_layer
    low, high = 0, n_layer + 1
    best = memory_plan(card, gpu_layers=0, header=header, **options)
    while low < high:  # more layers never need less GPU memory, so bisect
        mid = (low + high + 1) // 2
        plan = memory_plan(card, gpu_layers=mid, header=header, **options)
        if plan.bytes_of(device="GPU") <= free_gpu_bytes:
            low, best = mid, plan
        else:
            high = mid - 1
    return best
