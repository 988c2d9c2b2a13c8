"""The plan itself: a model plus one context, part by part, and the most layers a GPU can take."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from candor.engine.checkpoints import CHECKPOINTS_PER_SEQUENCE, SWA_FULL, checkpoints_kept
from candor.errors import InvalidParameter
from candor.gguf_file import GGUFHeader, read_gguf
from candor.identity import NO_KV_ARCHS, ModelCard
from candor.plan.compute import compute_peak, graph_shape
from candor.plan.kv import KV_TYPES, SWA_CACHE, checkpoint_bytes, context_sizes, kv_caches
from candor.plan.parts import MemoryPlan, Part
from candor.plan.shapes import read_shapes
from candor.plan.weights import repack_types, uses_amx, weight_parts

DECIDED_BY = (
    "candor's plan (llama.cpp's own fitter, common_fit_params behind llama-server's --fit and "
    "llama_params_fit, lives in llama.cpp's common library, which llama-cpp-python does not expose)"
)

# What candor's generation contexts use (ContextConfig's defaults), for the callers that plan them: the
# small sliding-window cache and its checkpoints.
GENERATION_SWA_FULL = SWA_FULL
GENERATION_CHECKPOINTS = CHECKPOINTS_PER_SEQUENCE


def _llama_cpu_features() -> tuple[str, ...]:
    from candor.engine.build_info import build_info  # loads llama.cpp (not a model): the build decides

    return build_info().cpu_features


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
    checkpoints: int = 0,
    flash_attn: bool = True,
    embeddings: bool = False,
    backend_samplers: bool = False,
    n_outputs_max: int = 0,
    extra_buffers: bool = True,
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
        swa_full: llama.cpp's default: the sliding-window cache holds the whole context. candor's
            generation contexts turn it off (candor.engine.checkpoints.SWA_FULL).
        checkpoints: context checkpoints kept per sequence at most (ContextConfig.checkpoints), counted
            where the sliding-window cache is small: copies of one sequence's window, in host memory.
        flash_attn: llama.cpp's "auto" enables it on the CPU and on GPUs that support it.
        embeddings: an embeddings context (adds an embedding row per output).
        backend_samplers: sampler chains run by llama.cpp (adds probabilities and candidates per output).
        n_outputs_max: most logits rows one llama_decode may ask for (0: llama.cpp's default, n_batch);
            candor's generation contexts use one per sequence, which keeps the compute buffer small.
        extra_buffers: llama.cpp may put weights in the CPU's extra buffer types (its default); without
            them (CANDOR_CPU_BUFFERS) nothing is repacked.
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
    features = (
        (_llama_cpu_features() if cpu_features is None else tuple(cpu_features)) if extra_buffers else ()
    )
    parts = weight_parts(header, sh.n_layer, i_gpu_start, gpu, repack_types(features), uses_amx(features))
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
    # candor's engine checkpoints a small sliding-window cache of a generation context (engine/context.py)
    small_swa = [c for c in caches if c.name == SWA_CACHE and not (swa_full or sh.recurrent or embeddings)]
    if small_swa and checkpoints > 0:
        one = checkpoint_bytes(sh, small_swa[0], sizes.n_stream)
        kept = checkpoints_kept(one, checkpoints)
        parts.append(
            Part(
                "context checkpoints", "checkpoints", "CPU", parallel * kept * one, True,
                f"{parallel} sequences x {kept} checkpoints of {min(sh.n_swa, small_swa[0].cells)} "
                "sliding-window cells (candor.engine.checkpoints)",
            )
        )  # fmt: skip
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
