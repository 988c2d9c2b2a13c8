"""What a model file really is, from its GGUF metadata and tensor shapes, never from a name someone typed."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from candor.errors import InvalidParameter, ModelNotFound
from candor.gguf_file import TOKENS_KEY, ArraySummary, GGUFHeader, read_gguf
from candor.jsonfile import read_json, write_json

# Architectures that keep no KV cache (llama_model::create_memory returns nullptr)
NO_KV_ARCHS = {
    "bert", "jina-bert-v2", "jina-bert-v3", "nomic-bert", "nomic-bert-moe", "neo-bert", "eurobert",
    "modern-bert", "gemma-embedding", "wavtokenizer-dec", "dream", "llada", "llada-moe", "rnd1",
}  # fmt: skip

logger = logging.getLogger(__name__)

# llama_pooling_type (llama.h): how a model pools its tokens into one output, as `{arch}.pooling_type` says.
POOLING_TYPES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
POOLING_RANK = 4  # a reranker: the pooled output is its classification head's, the first value the score
# A sequence classifier's head (llama.cpp's cls and cls_out): what llama.cpp's converter writes for
# bge-reranker and other BERT/XLM-RoBERTa rerankers, which declare no pooling type of their own.
CLASSIFIER_HEAD = ("cls.weight", "cls.output.weight")

# llama_ftype (llama.h): what `general.file_type` says the quantization is.
# fmt: off
FILE_TYPES: dict[int, str] = {
    0: "ALL_F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
# fmt: on

# Turn-format tokens whose presence in the vocabulary tells which chat format a model was trained on.
TURN_TOKEN_FAMILIES: dict[str, tuple[str, ...]] = {
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "mistral": ("[INST]", "[/INST]"),
    "phi": ("<|user|>", "<|assistant|>", "<|end|>"),
}
TURN_TOKENS: tuple[str, ...] = tuple(t for family in TURN_TOKEN_FAMILIES.values() for t in family)

SHA256_CACHE_FILE = "sha256.json"
_MAX_BASE_MODELS = 64  # the count is a number in the file; never loop on it unbounded
_SMALL_ARRAY = 16  # arrays up to this long are dumped whole in `metadata`


@dataclass(frozen=True)
class BaseModel:
    """A model this one was derived from, as `general.base_model.N.*` records it."""

    name: str | None
    organization: str | None = None
    version: str | None = None
    repo_url: str | None = None

    def label(self) -> str:
        """Name it as the file does: name, else repository URL, else organization."""
        return self.name or self.repo_url or self.organization or "an unnamed model"


@dataclass(frozen=True)
class ModelCard:
    """The identity of a GGUF model: what its metadata and tensors say it is."""

    path: Path
    file_size: int
    gguf_version: int
    architecture: str | None
    model_type: str | None  # general.type: "model", "adapter", ...
    name: str | None
    basename: str | None
    finetune: str | None
    size_label: str | None  # as the file states it; compare parameter_label
    version: str | None
    organization: str | None
    parameter_count: int  # sum of the element counts of every tensor
    file_type: str  # quantization, e.g. "Q4_K_M"
    file_type_inferred: bool  # True when general.file_type is absent and the tensors decided
    tensor_types: dict[str, int]  # ggml type name -> number of tensors
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    feed_forward_length: int | None
    vocab_size: int | None
    tokenizer_model: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    chat_template: str | None
    license: str | None
    license_name: str | None
    license_link: str | None
    base_models: tuple[BaseModel, ...]
    tags: tuple[str, ...]
    special_tokens_present: dict[str, int]  # known turn token -> its id in the vocabulary
    classifier_head: bool  # the file has a sequence classifier's head (see CLASSIFIER_HEAD)
    metadata: dict[str, Any] = field(repr=False)  # every key: scalars, small arrays, sizes of big ones

    @classmethod
    def from_header(cls, header: GGUFHeader) -> ModelCard:
        """Build the card from a parsed header (read with find_tokens=TURN_TOKENS for special tokens)."""
        meta = header.metadata
        arch = _str(meta.get("general.architecture"))
        file_type, inferred = _file_type(header)

        def arch_int(suffix: str) -> int | None:
            return _int(meta.get(f"{arch}.{suffix}")) if arch else None

        vocab = header.array_length(TOKENS_KEY)
        return cls(
            path=header.path,
            file_size=header.file_size,
            gguf_version=header.version,
            architecture=arch,
            model_type=_str(meta.get("general.type")),
            name=_str(meta.get("general.name")),
            basename=_str(meta.get("general.basename")),
            finetune=_str(meta.get("general.finetune")),
            size_label=_str(meta.get("general.size_label")),
            version=_str(meta.get("general.version")),
            organization=_str(meta.get("general.organization")),
            parameter_count=header.parameter_count,
            file_type=file_type,
            file_type_inferred=inferred,
            tensor_types=dict(Counter(t.type_name for t in header.tensors).most_common()),
            context_length=arch_int("context_length"),
            embedding_length=arch_int("embedding_length"),
            block_count=arch_int("block_count"),
            head_count=arch_int("attention.head_count"),
            head_count_kv=arch_int("attention.head_count_kv"),
            feed_forward_length=arch_int("feed_forward_length"),
            vocab_size=vocab if vocab is not None else arch_int("vocab_size"),
            tokenizer_model=_str(meta.get("tokenizer.ggml.model")),
            bos_token_id=_int(meta.get("tokenizer.ggml.bos_token_id")),
            eos_token_id=_int(meta.get("tokenizer.ggml.eos_token_id")),
            chat_template=_str(meta.get("tokenizer.chat_template")),
            license=_str(meta.get("general.license")),
            license_name=_str(meta.get("general.license.name")),
            license_link=_str(meta.get("general.license.link")),
            base_models=_base_models(meta),
            tags=tuple(t for t in _tuple(meta.get("general.tags")) if isinstance(t, str)),
            special_tokens_present={t: i for t, i in header.found_tokens.items() if t in TURN_TOKENS},
            classifier_head=any(t.name in CLASSIFIER_HEAD for t in header.tensors),
            metadata={k: _dumpable(v) for k, v in meta.items() if k != "tokenizer.chat_template"},
        )

    @property
    def pooling_type(self) -> int | None:
        """The pooling its GGUF declares (a key of POOLING_TYPES), or None when it declares none."""
        return _int(self.metadata.get(f"{self.architecture}.pooling_type")) if self.architecture else None

    @property
    def is_reranker(self) -> bool:
        """Whether rank pooling gives a relevance score: the GGUF declares it (Qwen3-Reranker) or has a
        classifier's head for it to run (bge-reranker, converted without a pooling type)."""
        return self.pooling_type == POOLING_RANK or self.classifier_head

    @property
    def display_name(self) -> str:
        """Name the model as its file does ("DeepSeek-R1-Distill-Qwen-32B"), else by its file name."""
        if self.name:
            return "-".join(self.name.split())
        if self.basename:
            return "-".join(p for p in (self.basename, self.size_label) if p)
        return self.path.stem

    @property
    def parameter_label(self) -> str:
        """The parameter count as people write it: "268M", "32.8B"."""
        return format_count(self.parameter_count)

    @property
    def is_distill(self) -> bool:
        """True when the file's name or finetune field says it is a distillation."""
        return any("distill" in (s or "").lower() for s in (self.finetune, self.name, self.basename))

    @property
    def is_finetune(self) -> bool:
        """True when anything in the file marks it as derived from another model."""
        return bool(self.finetune or self.base_models or self.is_distill)

    def lineage(self) -> str:
        """State plainly what the model is derived from; a finetune is never passed off as its base."""
        arch = self.architecture or "unknown-architecture"
        article = "an" if arch[0].lower() in "aeiou" else "a"
        who = f"{self.display_name} is {article} {arch} {self.parameter_label}"
        if self.model_type == "adapter":
            return f"{who}-parameter adapter, not a standalone model; it needs its base model to run"
        if not self.is_finetune:
            return f"{who} base model, not a finetune (the file names no finetune and no base model)"
        kind = "distill" if self.is_distill else (self.finetune or "").strip().lower()
        text = f"{who} finetune" + (f" ({kind})" if kind else "")
        if not self.base_models:
            return f"{text} of a base model the file does not name"
        labels = [b.label() for b in self.base_models]
        joined = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        return f"{text} of {joined}"

    def summary(self) -> str:
        """One honest line: identity, size, quantization, context, vocabulary and lineage."""
        quant = self.file_type + (" (inferred)" if self.file_type_inferred else "")
        if self.model_type == "adapter":
            origin = "adapter"
        elif self.is_finetune:
            bases = ", ".join(b.label() for b in self.base_models) or "an unnamed base"
            origin = f"{'distill' if self.is_distill else 'finetune'} of {bases}"
        else:
            origin = "base model"
        parts = [
            f"{self.architecture or 'unknown architecture'}",
            f"{self.parameter_label} parameters",
            quant,
            f"{self.file_size / 1e6:.1f} MB",
        ]
        if self.context_length:
            parts.append(f"context {self.context_length}")
        if self.vocab_size:
            parts.append(f"vocab {self.vocab_size}")
        parts += [origin, "chat template" if self.chat_template else "no chat template"]
        return f"{self.display_name}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (for `candor show --json`)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["path"] = str(self.path)
        out["base_models"] = [asdict(b) for b in self.base_models]
        out["tags"] = list(self.tags)
        out.update(
            display_name=self.display_name,
            parameter_label=self.parameter_label,
            is_finetune=self.is_finetune,
            is_distill=self.is_distill,
            lineage=self.lineage(),
        )
        return out


def read_card(path: str | Path) -> ModelCard:
    """Read a GGUF file's header and describe the model in it (raises as read_gguf does)."""
    return ModelCard.from_header(read_gguf(path, find_tokens=TURN_TOKENS))


def not_a_reranker(name: str, declared: int | None) -> InvalidParameter:
    """The refusal of a rerank request to a model that is no reranker (see ModelCard.is_reranker)."""
    said = "no pooling type" if declared is None else f"pooling type {POOLING_TYPES.get(declared, declared)}"
    return InvalidParameter(
        f"{name} is not a reranker: its GGUF declares {said} and has no classification head (cls, "
        "cls.output); rerank needs a reranker model such as bge-reranker-v2-m3 or Qwen3-Reranker"
    )


def reranker_embeds_nothing(name: str) -> InvalidParameter:
    """The refusal of an embeddings request to a reranker: its pooled output is one score, not a vector."""
    return InvalidParameter(
        f"{name} is a reranker: it scores documents against a query and makes no embeddings; use rerank "
        "(/v1/rerank) with it, or an embedding model for embeddings"
    )


def format_count(n: int) -> str:
    """Write a count with three significant digits and a K/M/B/T suffix: 268098176 -> "268M"."""
    if n < 1000:
        return str(n)
    rounded = float(f"{n:.3g}")
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if rounded >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return str(n)  # unreachable: n >= 1000


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _int(value: Any) -> int | None:
    """Read an integer field; a per-layer array (some architectures) gives its largest value."""
    if isinstance(value, tuple):
        ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return max(ints) if ints else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else ()


def _dumpable(value: Any) -> Any:
    """Keep scalars and short arrays; describe longer arrays by element type and length."""
    if isinstance(value, ArraySummary) or (isinstance(value, tuple) and len(value) > _SMALL_ARRAY):
        kind = value.type if isinstance(value, ArraySummary) else _element_kind(value[0])
        return {"array_of": kind, "length": len(value)}
    if isinstance(value, tuple):
        return [_dumpable(v) for v in value]
    return value


def _element_kind(value: Any) -> str:
    for kind, types in (("bool", bool), ("string", str), ("int", int), ("float", float)):
        if isinstance(value, types):
            return kind
    return "array"


def _base_models(meta: dict[str, Any]) -> tuple[BaseModel, ...]:
    count = min(_int(meta.get("general.base_model.count")) or 0, _MAX_BASE_MODELS)
    bases = []
    for i in range(count):
        prefix = f"general.base_model.{i}."
        fields = {f: _str(meta.get(prefix + f)) for f in ("name", "organization", "version", "repo_url")}
        if any(fields.values()):
            bases.append(BaseModel(**fields))
    return tuple(bases)


def _file_type(header: GGUFHeader) -> tuple[str, bool]:
    """Name the quantization from general.file_type, else from the type holding most weight elements."""
    code = _int(header.metadata.get("general.file_type"))
    if code is not None:
        return FILE_TYPES.get(code, f"unknown file type {code}"), False
    weights = [t for t in header.tensors if len(t.dims) >= 2] or list(header.tensors)
    if not weights:
        return "unknown", True
    by_type: Counter[str] = Counter()
    for t in weights:
        by_type[t.type_name] += t.n_elements
    return by_type.most_common(1)[0][0], True


def file_sha256(path: str | Path, cache_dir: Path) -> str:
    """Return the file's sha256, hashing it only when its size or mtime changed since the last time."""
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except FileNotFoundError:
        raise ModelNotFound(f"no model file at {path}; check the path, or pull the model first") from None
    cache_path = cache_dir / SHA256_CACHE_FILE
    cache = read_json(cache_path)
    entry = cache.get(str(resolved))
    if (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    digest = _hash_file(resolved)
    after = resolved.stat()
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return digest  # changed while hashing: do not cache a hash of a moving target
    cache = {k: v for k, v in cache.items() if os.path.exists(k)}
    cache[str(resolved)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    _write_atomically(cache_path, cache)
    return digest


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    block = bytearray(1 << 20)
    view = memoryview(block)
    with path.open("rb") as file:
        while n := file.readinto(block):
            digest.update(view[:n])
    return digest.hexdigest()


def _write_atomically(cache_path: Path, data: dict[str, Any]) -> None:
    try:
        write_json(cache_path, data)
    except OSError as exc:
        logger.warning("cannot write the sha256 cache %s: %s", cache_path, exc)
