"""The memory plan: what llama.cpp will allocate for a model and a context, computed before loading anything.

Everything comes from the GGUF header (tensor sizes, layers, heads, head sizes, sliding windows, vocabulary)
and from llama.cpp's own sizing rules, mirrored here with the file and function each one comes from
(llama.cpp as vendored in llama-cpp-python 0.3.36). No constant is fitted to a particular model.

Modules, each importing only those above it: parts (Part, MemoryPlan), shapes (the model's
hyperparameters), kv (context sizes, KV caches), compute (ggml-alloc replayed over the graph), weights
(tensors per device), memory (memory_plan, choose_gpu_layers), holding (weights read into memory or
mapped).
"""

from candor.plan.compute import TENSOR_ALIGNMENT, GraphShape, compute_peak, graph_shape, replay
from candor.plan.compute import _Graph as _Graph  # the replay's graph, for tests
from candor.plan.compute import _View as _View
from candor.plan.holding import available_memory, hold_weights, huge_pages_status
from candor.plan.kv import (
    CTX_PAD,
    KV_TYPES,
    ContextSizes,
    KVCache,
    context_sizes,
    kv_caches,
    row_bytes,
)
from candor.plan.memory import (
    DECIDED_BY,
    GENERATION_CHECKPOINTS,
    GENERATION_SWA_FULL,
    choose_gpu_layers,
    memory_plan,
)
from candor.plan.parts import MIB, MemoryPlan, Part
from candor.plan.shapes import (
    MAX_LAYERS,
    RECURRENT_KEYS,
    SWA_ARRAY_ONLY,
    SWA_RULES,
    Shapes,
    SwaRule,
    read_shapes,
)
from candor.plan.weights import INPUT_TENSORS, layer_of, repack_types, weight_parts

__all__ = [
    "CTX_PAD",
    "DECIDED_BY",
    "GENERATION_CHECKPOINTS",
    "GENERATION_SWA_FULL",
    "INPUT_TENSORS",
    "KV_TYPES",
    "MAX_LAYERS",
    "MIB",
    "RECURRENT_KEYS",
    "SWA_ARRAY_ONLY",
    "SWA_RULES",
    "TENSOR_ALIGNMENT",
    "ContextSizes",
    "GraphShape",
    "KVCache",
    "MemoryPlan",
    "Part",
    "Shapes",
    "SwaRule",
    "available_memory",
    "choose_gpu_layers",
    "compute_peak",
    "context_sizes",
    "graph_shape",
    "hold_weights",
    "huge_pages_status",
    "kv_caches",
    "layer_of",
    "memory_plan",
    "read_shapes",
    "repack_types",
    "replay",
    "row_bytes",
    "weight_parts",
]
