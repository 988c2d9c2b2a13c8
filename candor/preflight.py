"""The check every model file passes before llama.cpp sees it: a well-formed GGUF this build can run.

Beyond the header's structure (gguf_file), it refuses the metadata values and tensor types that make
llama.cpp abort (GGML_ASSERT) or crash while loading or decoding instead of returning an error: the
library loads models in its own process, so such a file must never reach llama.cpp there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from candor.engine.support import ggml_type_supported
from candor.errors import InvalidModelFile, UnsupportedModel
from candor.gguf_file import GGUFHeader, read_gguf
from candor.identity import TURN_TOKENS, ModelCard

LLAMA_MAX_LAYERS = 512  # llama-hparams.h
LLAMA_MAX_EXPERTS = 1024
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama-model.cpp LLAMA_ROPE_SCALING_TYPES
# ggml types no llama.cpp architecture computes with: a weight stored in one crashes the first decode
# (a segfault or GGML_ASSERT). A few architectures do read integer tables, named below.
INTEGER_TYPES = frozenset({"I8", "I16", "I32", "I64"})
INTEGER_TABLE_NAMES = frozenset({"d2t"})  # a draft model's token map
INTEGER_TABLE_SUFFIXES = (".ffn_gate_tid2eid.weight",)  # hash expert routing
WPM_TOKENIZER = "bert"  # its detokenizer aborts on byte tokens
# Diffusion models (llm_arch_is_diffusion): no KV cache, every token an output, so a generation context
# sized for one output row aborts on its first decode; candor has no diffusion sampler to run them with.
DIFFUSION_ARCHITECTURES = frozenset({"dream", "llada", "llada-moe", "rnd1"})
# Architectures whose tensor loading asserts that experts exist (src/models/*.cpp).
EXPERT_ARCHITECTURES = frozenset({"bailingmoe2", "glm4moe", "grovemoe", "llada-moe", "smallthinker"})
BYTE_TOKEN_TYPE = 6  # llama_token_type LLAMA_TOKEN_TYPE_BYTE
_FIX = "the file is damaged or was written wrongly; download the model again or convert it anew"


def _hint(path: Path) -> str:
    if path.name.startswith("sha256-") and "blobs" in path.parts:
        return (
            "; this is an Ollama blob, and some of Ollama's library models are GGUFs that Ollama rewrites "
            "while loading, which stock llama.cpp cannot run: get the model as a GGUF from Hugging Face "
            "instead (candor pull hf.co/ORG/REPO:QUANT)"
        )
    return "; upgrade llama-cpp-python for a newer llama.cpp, or download another quantization of the model"


def _int(value: Any) -> int | None:
    """An integer field; a per-layer array gives its largest value (as llama.cpp takes the maximum)."""
    if isinstance(value, tuple):
        ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return max(ints) if ints else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _hparam_problems(meta: dict[str, Any], arch: str) -> list[str]:
    """The values llama.cpp's load_hparams asserts on (an abort, not an error), as sentences."""
    problems = []
    layers = _int(meta.get(f"{arch}.block_count"))
    if layers is not None and not 1 <= layers <= LLAMA_MAX_LAYERS:
        problems.append(f"{arch}.block_count is {layers}; llama.cpp allows 1 to {LLAMA_MAX_LAYERS}")
    nextn = _int(meta.get(f"{arch}.nextn_predict_layers"))
    if layers is not None and nextn is not None and nextn > layers:
        problems.append(f"{arch}.nextn_predict_layers is {nextn}, more than the {layers} blocks")
    experts = _int(meta.get(f"{arch}.expert_count")) or 0
    used = _int(meta.get(f"{arch}.expert_used_count")) or 0
    groups = _int(meta.get(f"{arch}.expert_group_count")) or 0
    groups_used = _int(meta.get(f"{arch}.expert_group_used_count")) or 0
    if not 0 <= experts <= LLAMA_MAX_EXPERTS:
        problems.append(f"{arch}.expert_count is {experts}; llama.cpp allows up to {LLAMA_MAX_EXPERTS}")
    elif experts == 0 and (used or groups):
        problems.append(f"{arch}.expert_used_count or expert_group_count is set on a model with no experts")
    elif arch in EXPERT_ARCHITECTURES and not (experts and used):
        problems.append(f"{arch} is a mixture-of-experts architecture, but the file sets no experts")
    elif experts and not 0 < used <= experts:
        problems.append(f"{arch}.expert_used_count is {used}; it must be 1 to expert_count ({experts})")
    elif (
        experts
        and groups
        and not (groups < experts and (groups <= 1 or (experts % groups == 0 and 0 < groups_used < groups)))
    ):
        problems.append(
            f"the expert groups ({groups} groups, {groups_used} used, of {experts} experts) are inconsistent"
        )
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if isinstance(scaling, str) and scaling not in ROPE_SCALING_TYPES:
        problems.append(
            f"{arch}.rope.scaling.type is {scaling[:40]!r}; llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}"
        )
    for key, value in meta.items():
        if key.startswith(f"{arch}.") and key.endswith("epsilon"):
            values = value if isinstance(value, tuple) else (value,)
            bad = [v for v in values if isinstance(v, (int, float)) and not (math.isfinite(v) and v >= 0)]
            if bad:
                problems.append(f"{key} is {bad[0]}; a norm epsilon must be a finite number of at least 0")
    return problems


def _check_semantics(path: Path, header: GGUFHeader) -> None:
    """Refuse what is well-formed GGUF but makes llama.cpp abort or crash rather than fail."""
    meta = header.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch.strip():
        raise InvalidModelFile(
            f"{path} names no architecture (general.architecture is missing or not text), so it is not a "
            f"model llama.cpp can load; {_FIX}"
        )
    if arch in DIFFUSION_ARCHITECTURES:
        raise UnsupportedModel(
            f"{path} is a {arch} diffusion model, which candor cannot run (it generates left to right); "
            "use llama.cpp's llama-diffusion-cli for it"
        )
    problems = _hparam_problems(meta, arch)
    for t in header.tensors:
        table = t.name in INTEGER_TABLE_NAMES or t.name.endswith(INTEGER_TABLE_SUFFIXES)
        if t.type_name == "F64" or (t.type_name in INTEGER_TYPES and not table):
            problems.append(
                f"tensor {t.name!r} is stored as {t.type_name}, a type llama.cpp cannot compute with"
            )
            break
    if header.repeated_token is not None:
        index, text = header.repeated_token
        problems.append(f"vocabulary entry {index} ({text[:40]!r}) repeats an earlier token")
    if meta.get("tokenizer.ggml.model") == WPM_TOKENIZER and BYTE_TOKEN_TYPE in header.token_types:
        problems.append(
            f"its {WPM_TOKENIZER!r} vocabulary has byte tokens, which that tokenizer cannot decode"
        )
    if problems:
        raise InvalidModelFile(
            f"{path} would crash llama.cpp (which asserts on these values instead of refusing them): "
            f"{'; '.join(problems[:3])}; {_FIX}"
        )


def preflight(path: Path) -> GGUFHeader:
    """Check the header (structure, sizes, offsets, the values llama.cpp aborts on) and its tensor types."""
    header = read_gguf(path, find_tokens=TURN_TOKENS)
    unsupported = sorted(
        {t.type_name for t in header.tensors if not ggml_type_supported(t.ggml_type, t.type_name)}
    )
    if unsupported:
        from candor.engine.build_info import build_info  # loads llama.cpp: only to say which build refuses

        build = build_info().llama_cpp_commit
        raise UnsupportedModel(
            f"{path} uses tensor type(s) {', '.join(unsupported)} that this llama.cpp build ({build}) "
            f"cannot run{_hint(path)}"
        )
    _check_semantics(path, header)
    return header


def checked_card(path: Path) -> ModelCard:
    """Preflight a file and describe the model in it."""
    return ModelCard.from_header(preflight(path))
