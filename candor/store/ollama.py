"""Import the models of a local Ollama store by reference: Ollama's blobs are read in place, never copied.

Layout (see REFERENCE.md): `manifests/{host}/{namespace}/{model}/{tag}` are JSON manifests whose layers
name blobs `blobs/sha256-<hex>` by digest. Every path component, name and digest is validated before it
becomes a path (CVE-2024-37032), and nothing outside the Ollama root is ever opened.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from candor.default_model import DEFAULT_MODEL_ALIASES, DEFAULT_MODEL_NAME
from candor.engine.probe import probe_load
from candor.errors import CandorError, InvalidParameter, ModelNotFound
from candor.identity import file_sha256
from candor.parameters import SAMPLING_OPTIONS
from candor.preflight import checked_card
from candor.store.names import parse_name
from candor.store.registry import StoreEntry
from candor.store.service import Store

OLLAMA_MODELS_ENV = "OLLAMA_MODELS"
SERVICE_ROOT = Path("/usr/share/ollama/.ollama/models")
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MEDIA_PREFIX = "application/vnd.ollama.image."
SOURCE = "ollama"
TEMPLATE_NOTE = "ignored: candor uses the GGUF's own chat template"
LORA_PROBLEM = "candor does not apply LoRA adapters yet; running the base model alone would not be this model"
REWRITE_HINT = (
    "; some models from Ollama's own library are GGUFs that Ollama rewrites while loading, which stock "
    "llama.cpp cannot run: get the model as a GGUF from Hugging Face instead "
    "(candor pull hf.co/ORG/REPO:QUANT)"
)
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_MAX_JSON_BYTES = 1 << 20  # manifests, params and system prompts are small; refuse anything huge
_INT_KEYS = frozenset({"num_ctx"} | {k for k, (_, parse) in SAMPLING_OPTIONS.items() if parse is int})
_FLOAT_KEYS = frozenset(k for k, (_, parse) in SAMPLING_OPTIONS.items() if parse is float)

Status = Literal["imported", "unusable", "skipped"]


@dataclass(frozen=True)
class OllamaImport:
    """What happened to one Ollama manifest: imported, registered as unusable (reason), or skipped."""

    name: str | None  # candor's name for it; None when the manifest's path is not a valid name
    ollama_name: str  # the name as `ollama list` shows it (or the manifest's relative path)
    status: Status
    reason: str = ""
    entry: StoreEntry | None = None


class _Skip(Exception):
    """One manifest cannot be imported; the message says why."""


@dataclass
class _Layers:
    """What a manifest's layers contribute to an entry."""

    model: Path | None = None
    model_digest: str = ""
    projector: Path | None = None
    projector_digest: str = ""
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dropped_parameters: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    adapter: bool = False
    template: bool = False
    ignored: list[str] = field(default_factory=list)


def default_root() -> Path:
    """Ollama's model folder: $OLLAMA_MODELS, else ~/.ollama/models."""
    env = os.environ.get(OLLAMA_MODELS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def _checked_root(root: Path | None) -> Path:
    given = root is not None
    where = (root if root is not None else default_root()).expanduser()
    if (where / "manifests").is_dir():
        return where.resolve()
    hint = f"give the folder as DIR, set {OLLAMA_MODELS_ENV}, or"
    if (where / "models" / "manifests").is_dir():
        hint = f"did you mean {where / 'models'}? Give that folder as DIR, or"
    service = f"Ollama's Linux service keeps its models in {SERVICE_ROOT}"
    if not given and SERVICE_ROOT.joinpath("manifests").is_dir():
        service += f" (it exists here: run `candor import-ollama {SERVICE_ROOT}`)"
    if given:
        how = "the folder given"
    elif os.environ.get(OLLAMA_MODELS_ENV):
        how = f"from ${OLLAMA_MODELS_ENV}"
    else:
        how = f"the default, as {OLLAMA_MODELS_ENV} is not set"
    raise ModelNotFound(
        f"no Ollama model store at {where} ({how}; it has no manifests/ folder): "
        f"{hint} check that Ollama is installed and has pulled a model; {service}"
    )


def import_ollama(store: Store, root: Path | None = None, *, probe: bool = True) -> list[OllamaImport]:
    """Register every model of an Ollama store by reference (idempotent) and report each one.

    Args:
        store: the candor store to register the models in.
        root: Ollama's model folder (default: $OLLAMA_MODELS, else ~/.ollama/models).
        probe: load each model in a child process to check that this llama.cpp can run it.
    Returns:
        One OllamaImport per manifest found, sorted by Ollama name.
    """
    base = _checked_root(root)
    results = [_import_one(store, base, found, probe=probe) for found in _walk(base)]
    return sorted(results, key=lambda r: r.ollama_name.lower())


def _walk(root: Path) -> list[tuple[Path, tuple[str, ...], str | None]]:
    """Every manifest under root/manifests as (path, path parts, why it cannot be read); no symlinks."""
    found: list[tuple[Path, tuple[str, ...], str | None]] = []
    pending: list[tuple[Path, tuple[str, ...]]] = [(root / "manifests", ())]
    while pending:
        folder, parts = pending.pop()
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.append((folder, parts, f"cannot read the folder {folder} ({exc.strerror or exc})"))
            continue
        for child in children:
            if child.name.startswith("."):
                continue  # .DS_Store and other dotfiles are not manifests
            here = (*parts, child.name)
            if child.is_symlink():
                found.append((Path(child.path), here, f"{child.path} is a symbolic link; not followed"))
            elif child.is_dir(follow_symlinks=False) and len(here) < 4:
                pending.append((Path(child.path), here))
            else:
                found.append((Path(child.path), here, None))
    return found


def _display_name(parts: tuple[str, ...]) -> str:
    if len(parts) != 4:
        return "/".join(parts)
    host, namespace, model, tag = parts
    if host == DEFAULT_HOST:
        return f"{model}:{tag}" if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def _candor_name(parts: tuple[str, ...]) -> str:
    """The validated candor name for a manifest path; _Skip when any part is not a valid name part."""
    if len(parts) != 4:
        raise _Skip(f"not a manifest: expected manifests/HOST/NAMESPACE/MODEL/TAG, found {'/'.join(parts)}")
    try:
        for part in parts[:3]:
            if str(parse_name(part)) != f"{part}:latest":
                raise InvalidParameter(f"{part!r} is not a valid name part")
        if parse_name(f"x:{parts[3]}").tag != parts[3]:
            raise InvalidParameter(f"{parts[3]!r} is not a valid tag")
        display = _display_name(parts)
        name = str(parse_name(display))
    except InvalidParameter as exc:
        raise _Skip(f"its path is not a valid model name ({exc})") from None
    if name != display:
        raise _Skip(f"its path does not map to a model name unambiguously ({display!r} -> {name!r})")
    if name in DEFAULT_MODEL_ALIASES or name.lower() == DEFAULT_MODEL_NAME.lower():
        raise _Skip(f"{name!r} is candor's built-in default model name")
    return name


def _inside(root: Path, path: Path, what: str) -> Path:
    """path, resolved; _Skip when it (or a symlink on the way) leads outside root."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise _Skip(f"{what} {path} leads outside the Ollama folder {root} (to {resolved}); not followed")
    return resolved


def _read_small(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise _Skip(f"cannot read its {what} ({exc.strerror or exc})") from None
    if len(data) > _MAX_JSON_BYTES:
        raise _Skip(f"its {what} is larger than {_MAX_JSON_BYTES} bytes")
    return data


def _read_manifest(root: Path, path: Path) -> list[tuple[str, str]]:
    """The (kind, digest hex) of every layer; _Skip says what is wrong with a malformed manifest."""
    if path.is_symlink() or not path.is_file():
        raise _Skip(f"{path} is not a regular file")
    data = _read_small(_inside(root, path, "manifest"), "manifest")
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Skip(f"the manifest is not valid JSON ({exc}); re-pull it with `ollama pull`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise _Skip("the manifest has no list of layers; re-pull it with `ollama pull`")
    if manifest.get("schemaVersion") != 2:
        raise _Skip(f"unsupported manifest schemaVersion {manifest.get('schemaVersion')!r} (candor reads 2)")
    layers: list[tuple[str, str]] = []
    for layer in manifest["layers"]:
        media = layer.get("mediaType") if isinstance(layer, dict) else None
        digest = layer.get("digest") if isinstance(layer, dict) else None
        if not isinstance(media, str) or not isinstance(digest, str):
            raise _Skip("a layer has no mediaType or digest; re-pull it with `ollama pull`")
        match = _DIGEST.fullmatch(digest)
        if match is None:
            raise _Skip(f"a layer has an invalid digest {digest[:100]!r} (expected sha256:<64 hex digits>)")
        kind = media.removeprefix(MEDIA_PREFIX) if media.startswith(MEDIA_PREFIX) else media
        layers.append((kind, match.group(1)))
    return layers


def _blob(root: Path, kind: str, digest: str) -> Path:
    path = root / "blobs" / f"sha256-{digest}"
    if not path.exists() and not path.is_symlink():
        raise _Skip(f"its {kind} blob {path} is missing; re-pull the model with `ollama pull`")
    resolved = _inside(root, path, f"{kind} blob")
    if not resolved.is_file():
        raise _Skip(f"its {kind} blob {path} is not a regular file")
    return resolved


def _parameters(raw: bytes, layers: _Layers) -> None:
    try:
        params = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Skip(f"its params layer is not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise _Skip("its params layer is not a JSON object")
    for key, value in params.items():
        if _valid_parameter(key, value):
            layers.parameters[key] = value
        else:
            layers.dropped_parameters.append(key)


def _valid_parameter(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if key == "stop":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if key in _INT_KEYS:
        return isinstance(value, int)
    if key in _FLOAT_KEYS:
        return isinstance(value, (int, float))
    return False


def _collect(root: Path, kinds: list[tuple[str, str]]) -> _Layers:
    layers = _Layers()
    for kind, digest in kinds:
        if kind == "model":
            if layers.model is not None:
                raise _Skip("the manifest has more than one model layer; candor expects one GGUF")
            layers.model, layers.model_digest = _blob(root, kind, digest), digest
        elif kind == "projector":
            layers.projector, layers.projector_digest = _blob(root, kind, digest), digest
        elif kind == "system":
            text = _read_small(_blob(root, kind, digest), "system prompt")
            layers.system = text.decode("utf-8", errors="replace")
        elif kind == "params":
            _parameters(_read_small(_blob(root, kind, digest), "params"), layers)
        elif kind == "license":
            layers.licenses.append(str(_blob(root, kind, digest)))
        elif kind == "adapter":
            layers.adapter = True
        elif kind == "template":
            layers.template = True
        else:
            layers.ignored.append(kind)
    if layers.model is None:
        raise _Skip("the manifest has no model layer (no GGUF to run)")
    return layers


def _problem(store: Store, layers: _Layers, *, probe: bool) -> str | None:
    """Why llama.cpp cannot run this model as Ollama would, or None."""
    assert layers.model is not None
    cache = store.settings.cache_dir
    for path, digest in ((layers.model, layers.model_digest), (layers.projector, layers.projector_digest)):
        if path is not None and file_sha256(path, cache) != digest:
            return (
                f"the blob {path} does not match its digest sha256:{digest}; Ollama's copy is damaged: "
                "re-pull the model with `ollama pull`, then run `candor import-ollama` again"
            )
    if layers.adapter:
        return LORA_PROBLEM
    try:
        checked_card(layers.model)
    except (CandorError, OSError) as exc:
        return _with_hint(str(exc))
    if probe:
        result = probe_load(layers.model)
        if not result.ok:
            return _with_hint(f"llama.cpp refused it in a load test: {_one_line(result.reason)}")
    return None


def _one_line(text: str) -> str:
    """The child's stderr as one line, without Python's own warnings (they are not llama.cpp's answer)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "Warning: " not in line]
    return "; ".join(lines) or text.strip()


def _with_hint(reason: str) -> str:
    return reason if "Hugging Face" in reason else reason + REWRITE_HINT


def _import_one(
    store: Store, root: Path, found: tuple[Path, tuple[str, ...], str | None], *, probe: bool
) -> OllamaImport:
    manifest, parts, unreadable = found
    display = _display_name(parts)
    name: str | None = None
    try:
        if unreadable:
            raise _Skip(unreadable)
        name = _candor_name(parts)
        existing = store.registry.find(name)
        if existing is not None and existing.source != SOURCE:
            raise _Skip(
                f"candor already has a model named {name!r} (from {existing.source}); remove it with "
                f"`candor rm {name}` first to import Ollama's"
            )
        layers = _collect(root, _read_manifest(root, manifest))
    except _Skip as exc:
        return OllamaImport(name, display, "skipped", str(exc))
    assert layers.model is not None
    problem = _problem(store, layers, probe=probe)
    origin: dict[str, Any] = {
        "ollama_root": str(root),
        "manifest": str(manifest),
        "ollama_name": display,
    }
    if layers.template:
        origin["ollama_template"] = TEMPLATE_NOTE
    if layers.dropped_parameters:
        origin["ollama_params_ignored"] = sorted(layers.dropped_parameters)
    if layers.ignored:
        origin["ollama_layers_ignored"] = sorted(set(layers.ignored))
    entry = StoreEntry(
        name=name,
        path=str(layers.model),
        size=layers.model.stat().st_size,
        sha256=layers.model_digest,
        source=SOURCE,
        origin=origin,
        mmproj=str(layers.projector) if layers.projector else None,
        license_files=tuple(layers.licenses),
        owned_files=(),  # Ollama owns its blobs: `candor rm` never deletes them
        system=layers.system,
        parameters=layers.parameters,
        usable=problem is None,
        problem=problem,
    )
    entry = store.registry.put(entry)
    if problem is None:
        return OllamaImport(name, display, "imported", "", entry)
    return OllamaImport(name, display, "unusable", problem, entry)
