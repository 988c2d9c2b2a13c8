"""Context sizes (llama_context::llama_context) and the KV caches (llama_kv_cache, llama_kv_cache_iswa)."""

from __future__ import annotations

from dataclasses import dataclass

from candor.errors import InvalidParameter
from candor.gguf_file import GGML_TYPES
from candor.identity import NO_KV_ARCHS
from candor.plan.shapes import Shapes

# KV cache element types (ggml type ids, as candor.engine.context.KV_TYPES passes them to llama.cpp)
KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}
SWA_CACHE = "KV cache (sliding-window layers)"
CTX_PAD = 256  # llama-context.cpp: cparams.n_ctx = GGML_PAD(n_ctx, 256); the SWA cache is padded alike


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
    # llama_kv_cache_iswa: min(size, n_swa * n_seq + n_ubatch), padded to 256; candor's engine keeps
    # llama.cpp's default (a full-size window) for recurrent and hybrid models
    if iswa and not swa_full and not sh.recurrent:
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
        name = SWA_CACHE if swa else ("KV cache (global layers)" if iswa else "KV cache")
        out.append(
            KVCache(name, n, tuple(layers), tuple(per_layer[il] * n * sizes.n_stream for il in layers))
        )
    return out


def checkpoint_bytes(sh: Shapes, swa: KVCache, n_stream: int) -> int:
    """One sequence's sliding-window cells as a context checkpoint saves them (llama_state_seq_get_data_ext
    with LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY, llama_kv_cache::state_write): the n_swa cells its next token
    can attend to, each with its position and sequence, then each layer's K rows and V rows."""
    cells = min(sh.n_swa, swa.cells)
    per_cell = swa.bytes // (swa.cells * n_stream)  # K and V rows of every sliding-window layer
    header = 4 + 4 + 4 * n_stream + 4 + 4  # magic, sequence, cell count per stream, v_trans, layers
    tensors = 2 * len(swa.layers) * (4 + 8)  # each K and V: its type and row size
    return header + tensors + cells * (per_cell + 4 + 4 + 4)  # position, sequence count, sequence
