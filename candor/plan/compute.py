"""The compute buffer: ggml-alloc replayed over the worst-case decoder graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from candor.gguf_file import TensorInfo
from candor.plan.kv import ContextSizes, KVCache
from candor.plan.shapes import Shapes

TENSOR_ALIGNMENT = 32  # ggml-cpu's buffer alignment: every graph tensor is padded to it (ggml-alloc.c)


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
