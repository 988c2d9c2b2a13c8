"""The model's shapes, as llama_model::load_hparams reads them from the GGUF header."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from candor.errors import InvalidParameter
from candor.gguf_file import TOKENS_KEY, GGUFHeader

MAX_LAYERS = 4096


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
RECURRENT_KEYS = (".ssm.", ".wkv.", ".shortconv.", ".time_mix_", ".rwkv")


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
