"""Which files of a Hugging Face repo a pull reference selects, and the name they get in the store.

Pure functions over the hub's file listing: parse `hf.co/ORG/REPO[:QUANT]` references, group GGUF files
(split parts together) into models, pick the model, its projector and the repo's licence texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from candor.errors import InvalidParameter, ModelNotFound
from candor.store.names import HF_HOST, parse_name

DEFAULT_QUANT = "Q4_K_M"
HUB_HOSTS = frozenset({HF_HOST, "huggingface.co", "www.huggingface.co"})
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# A quantization label in a file or folder name: Q4_K_M, IQ4_XS, Q8_0, TQ1_0, BF16, F16, UD-Q4_K_XL...
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]{1,4})*|TQ[12]_0|MXFP4(?:_MOE)?|BF16|FP?16|FP?32|FP?64))"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_LICENSE = re.compile(r"licen[cs]e(?:[._-][A-Za-z0-9._-]*)?", re.IGNORECASE)


@dataclass(frozen=True)
class HubRef:
    """What a pull reference asks for: a repo, and a quantization or one file in it (or neither)."""

    repo: str  # ORG/REPO
    quant: str | None = None
    file: str | None = None  # path of a .gguf in the repo


@dataclass(frozen=True)
class HubFile:
    """One file of a repo as the hub lists it."""

    path: str
    size: int | None = None
    sha256: str | None = None  # LFS files: the sha256 the hub published
    blob_id: str | None = None  # git object id (the hash of small, non-LFS files)

    @property
    def digest(self) -> str | None:
        """The published sha256 as `sha256:<hex>`, when there is one."""
        return f"sha256:{self.sha256}" if self.sha256 else None


@dataclass(frozen=True)
class ModelFiles:
    """One loadable model in a repo: a GGUF file, or every part of a split one in order."""

    parts: tuple[HubFile, ...]
    quant: str | None  # as written in the file (or folder) name

    @property
    def label(self) -> str:
        """The quantization, or the file name when the name carries none."""
        return self.quant or self.parts[0].path


# -- references and file names --------------------------------------------------------------------------


def parse_ref(ref: str) -> HubRef:
    """Parse `[hf.co/]ORG/REPO[:QUANT]` or `[hf.co/]ORG/REPO/FILE.gguf` (also huggingface.co, https://)."""
    usage = (
        "use hf.co/ORG/REPO[:QUANT] or ORG/REPO/FILE.gguf, e.g. hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    )
    text = ref.strip() if isinstance(ref, str) else ""
    if not text or len(text) > 1024 or "\\" in text or "\0" in text or "?" in text or "#" in text:
        raise InvalidParameter(f"invalid model reference {ref!r}; {usage}")
    text = re.sub(r"^https?://", "", text, flags=re.IGNORECASE)
    host, _, rest = text.partition("/")
    if host.lower() in HUB_HOSTS:
        text = rest
    segments = text.split("/")
    if len(segments) < 2:
        raise InvalidParameter(f"invalid model reference {ref!r}: no ORG/REPO in it; {usage}")
    org, repo, *path = segments
    quant = ""
    if not path:
        repo, sep, quant = repo.partition(":")
        if sep and not _TAG.fullmatch(quant):
            raise InvalidParameter(f"invalid quantization {quant!r} in {ref!r}; {usage}")
    for part in (org, repo):
        if not _REPO_PART.fullmatch(part) or "--" in part or ".." in part:
            raise InvalidParameter(
                f"invalid repository {org}/{repo!s} in {ref!r}: ORG and REPO use letters, digits, '.', '_' "
                f"and '-' (no '--' or '..'); {usage}"
            )
    file = "/".join(path) or None
    bad_path = any(p in ("", ".", "..") for p in path) or ":" in (file or "")
    if file is not None and (bad_path or not file.lower().endswith(".gguf")):
        raise InvalidParameter(f"invalid file {file!r} in {ref!r}: give the path of a .gguf; {usage}")
    return HubRef(f"{org}/{repo}", quant if quant.lower() not in ("", "latest") else None, file)


def is_projector(path: str) -> bool:
    """Whether a GGUF is a multimodal projector (mmproj), which is never the model itself."""
    return "mmproj" in PurePosixPath(path).name.lower()


def _is_model_gguf(path: str) -> bool:
    name = PurePosixPath(path).name.lower()
    return name.endswith(".gguf") and not is_projector(path) and "imatrix" not in name


def split_info(path: str) -> tuple[str, int, int] | None:
    """(path without the part suffix, part number, part count) of a split GGUF part, else None."""
    match = _SPLIT.search(path)
    if match is None:
        return None
    return path[: match.start()], int(match.group(1)), int(match.group(2))


def quant_of(path: str) -> str | None:
    """The quantization a file's name (or else its folder's) names, as written there, or None."""
    posix = PurePosixPath(path)
    split = split_info(path)
    stem = PurePosixPath(split[0]).name if split else posix.name[: -len(".gguf")]
    for name in (stem, *(p for p in reversed(posix.parent.parts))):
        found = _QUANT.findall(name)
        if found:
            return str(found[-1])
    return None


def model_files(files: Iterable[HubFile]) -> list[ModelFiles]:
    """Group a repo's model GGUFs into loadable models (split parts together), sorted by path."""
    groups: dict[str, list[HubFile]] = {}
    for f in files:
        if _is_model_gguf(f.path):
            split = split_info(f.path)
            groups.setdefault(f"{split[0]}\0{split[2]}" if split else f.path, []).append(f)
    models = []
    for key in sorted(groups):
        parts = sorted(groups[key], key=lambda f: f.path)
        models.append(ModelFiles(tuple(parts), quant_of(parts[0].path)))
    return models


def _known_quants(models: list[ModelFiles]) -> str:
    return ", ".join(sorted({m.label for m in models}, key=str.lower))


def choose_model(ref: HubRef, models: list[ModelFiles], endpoint: str) -> ModelFiles:
    """The model a reference selects; errors list what the repo offers."""
    where = f"{ref.repo} on {endpoint}"
    if not models:
        raise ModelNotFound(
            f"{where} has no GGUF model file, so llama.cpp cannot run it; look for a GGUF version of the "
            "model (repos named like ...-GGUF) and pull that"
        )
    if ref.file is not None:
        for model in models:
            if any(part.path == ref.file for part in model.parts):
                return model
        hint = "it is a projector (mmproj), not a model; " if is_projector(ref.file) else ""
        files = ", ".join(m.parts[0].path for m in models)
        raise ModelNotFound(f"no model file {ref.file!r} in {where}; {hint}its model files: {files}")
    if ref.quant is not None:
        wanted = ref.quant.upper()
        matches = [m for m in models if m.quant is not None and m.quant.upper() == wanted]
        if not matches:
            example = next((m.quant for m in models if m.quant), None)
            hint = f", e.g. candor pull {HF_HOST}/{ref.repo}:{example}" if example else ""
            raise ModelNotFound(
                f"{where} has no {ref.quant} GGUF; it has: {_known_quants(models)}. Pull one of those{hint}"
            )
    else:
        matches = [m for m in models if m.quant is not None and m.quant.upper() == DEFAULT_QUANT]
        if not matches and len(models) == 1:
            matches = models
        if not matches:
            raise InvalidParameter(
                f"{where} has several quantizations and no {DEFAULT_QUANT}: {_known_quants(models)}; "
                f"choose one, e.g. candor pull {HF_HOST}/{ref.repo}:{models[0].label}"
            )
    if len(matches) > 1:
        files = ", ".join(m.parts[0].path for m in matches)
        raise InvalidParameter(
            f"{where} has several {matches[0].label} models ({files}); name the file, e.g. "
            f"candor pull {HF_HOST}/{ref.repo}/{matches[0].parts[0].path}"
        )
    return matches[0]


def check_complete(model: ModelFiles, repo: str) -> None:
    """Refuse a split model whose repo lists only some of its parts."""
    split = split_info(model.parts[0].path)
    if split is None:
        return
    numbers = [info[1] for p in model.parts if (info := split_info(p.path))]
    if numbers != list(range(1, split[2] + 1)):
        raise ModelNotFound(
            f"{repo} lists parts {numbers} of the {split[2]}-part model {split[0]}; the repo is incomplete, "
            "so it cannot be pulled"
        )


def choose_projector(files: Iterable[HubFile], model: ModelFiles) -> HubFile | None:
    """The mmproj to fetch with a model: beside it (or at the top level), its own quant first, then F16."""
    folder = str(PurePosixPath(model.parts[0].path).parent)
    candidates = [
        f
        for f in files
        if f.path.lower().endswith(".gguf")
        and is_projector(f.path)
        and str(PurePosixPath(f.path).parent) in (folder, ".")
    ]
    if not candidates:
        return None
    order = [q for q in (model.quant, "F16", "BF16", "F32", "Q8_0") if q]

    def rank(f: HubFile) -> tuple[int, int, str]:
        quant = (quant_of(f.path) or "").upper()
        position = next((i for i, q in enumerate(order) if q.upper() == quant), len(order))
        beside = 0 if str(PurePosixPath(f.path).parent) == folder else 1
        return beside, position, f.path

    return min(candidates, key=rank)


def license_files(files: Iterable[HubFile]) -> list[HubFile]:
    """Licence texts at the top level of a repo (LICENSE, LICENSE.md, LICENCE.txt...)."""
    return sorted(
        (f for f in files if "/" not in f.path and _LICENSE.fullmatch(f.path)), key=lambda f: f.path
    )


def store_name(repo: str, model: ModelFiles) -> str:
    """`hf.co/ORG/REPO:QUANT` (or `:STEM` for a file whose name carries no quantization)."""
    tag = model.quant
    if tag is None:
        first = model.parts[0].path
        split = split_info(first)
        stem = PurePosixPath(split[0] if split else first[: -len(".gguf")]).name
        tag = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lstrip(".-")[:128] or "model"
    return str(parse_name(f"{HF_HOST}/{repo}:{tag}"))
