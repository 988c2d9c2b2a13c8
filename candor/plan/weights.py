"""Weights per device, as llama_model_base::load_tensors places them (memory-mapped, repacked, offloaded)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from candor.gguf_file import GGML_TYPES, GGUFHeader, TensorInfo
from candor.plan.parts import Part

GGML_TYPES_BY_NAME = {t.name: t for t in GGML_TYPES.values()}

# tensors read with GET_ROWS, never multiplied: they never go to the CPU repack buffer
INPUT_TENSORS = ("token_embd.", "token_types.", "position_embd.", "per_layer_token_embd.")


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


# ggml-cpu's AMX buffer type (amx/amx.cpp, amx/mmq.cpp): type -> (row-length multiple, bytes it adds per
# block to pack it: Q8_0's s8s8 compensation, K-quants' unpacked scales); F16 is taken as it is.
AMX_TYPES: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 0), "Q4_1": (32, 0), "Q8_0": (32, 4), "Q4_K": (256, 4), "Q5_K": (256, 4), "Q6_K": (256, 0),
    "IQ4_XS": (256, 2), "F16": (16, 0),
}  # fmt: skip
AMX_TILE_ROWS = 32  # output rows must be a multiple of 2 x TILE_N


def amx_bytes(t: TensorInfo) -> int | None:
    """Bytes the AMX buffer type allocates for a matrix it takes, or None when it does not take it."""
    taken = AMX_TYPES.get(t.type_name)
    if taken is None or len(t.dims) != 2 or t.dims[1] % AMX_TILE_ROWS or t.dims[0] % taken[0]:
        return None
    blocks = t.n_bytes // GGML_TYPES_BY_NAME[t.type_name].type_size
    return t.n_bytes + blocks * taken[1]


def uses_amx(cpu_features: Iterable[str]) -> bool:
    """Whether this llama.cpp build has the AMX buffer type (placed ahead of CPU_REPACK)."""
    return "AMX_INT8" in set(cpu_features)


def weight_parts(
    header: GGUFHeader,
    n_layer: int,
    i_gpu_start: int,
    gpu: bool,
    repack: Mapping[str, int],
    amx: bool = False,
) -> list[Part]:
    """Weights on the CPU (memory-mapped), their AMX and CPU repack copies, and those offloaded to a GPU."""
    first, last, repacked, on_gpu, packed = header.file_size, 0, 0, 0, 0
    tied = all(t.name != "output.weight" for t in header.tensors)
    output_on_cpu = n_layer < i_gpu_start
    for t in header.tensors:
        if layer_of(t.name, n_layer) >= i_gpu_start:  # the input layer (-1) never leaves the CPU
            on_gpu += t.n_bytes
            continue
        rows = repack.get(t.type_name)
        matmul = len(t.dims) == 2 or (len(t.dims) == 3 and "_exps." in t.name)
        duplicate = tied and output_on_cpu and t.name == "token_embd.weight"  # the output reuses it
        multiplied = duplicate or not t.name.startswith(INPUT_TENSORS)
        in_amx = amx_bytes(t) if amx and multiplied else None
        if in_amx is not None:
            packed += in_amx  # AMX is ahead of CPU_REPACK in llama.cpp's list of CPU buffer types
            if not duplicate:
                continue
        elif rows and matmul and multiplied and t.dims[1] % rows == 0:
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
    if packed:
        parts.append(
            Part(
                "weights (AMX copy)", "weights", "CPU", packed, True,
                "quantized matrices packed for the CPU's AMX tiles (AMX buffer type)",
            )
        )  # fmt: skip
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
