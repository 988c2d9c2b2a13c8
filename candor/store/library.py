"""The store's library face: what the CLI, the server and `candor.*` call to name, describe and fetch models.

Nothing above the store (cli/, server/) imports the store's other modules; the types they need are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candor.config import Settings
from candor.errors import CandorError
from candor.identity import ModelCard, file_sha256
from candor.preflight import checked_card
from candor.prompt import ChatFormat, chat_format_of
from candor.store.claims import Claim, check_name
from candor.store.licenses import ModelLicense, engine_notices, license_texts, model_license, readable
from candor.store.registry import StoreEntry
from candor.store.service import ListedModel, Removal, Store

if TYPE_CHECKING:
    # Only for annotations: the Hugging Face client loads with the first pull, not with the library.
    from candor.store.hf import PullProgress as PullProgress
    from candor.store.ollama import OllamaImport as OllamaImport

__all__ = [
    "Claim",
    "Library",
    "ListedModel",
    "ModelDescription",
    "ModelLicense",
    "Removal",
    "StoreEntry",
    "copy_model",
    "describe_model",
    "import_model",
    "import_ollama",
    "license_of",
    "licenses",
    "list_models",
    "pull",
    "remove_model",
]


@dataclass(frozen=True)
class ModelDescription:
    """What a model is, as `candor show`, /api/show, /api/tags and /v1/models report it.

    `card` and `chat_format` are None only in a listing, where a file that cannot be read is reported
    with its `problem` instead of failing the whole list.
    """

    path: Path  # the GGUF file (the first part of a split model)
    entry: StoreEntry | None  # None for a model given by path
    card: ModelCard | None  # what the file's metadata and tensor shapes say
    chat_format: ChatFormat | None  # the model's template, or the fallback its vocabulary points to
    license_files: tuple[Path, ...] = ()  # licence texts that came with the model
    # Ollama-named defaults answers start from: the chat format's, overlaid with the name's own
    parameters: Mapping[str, Any] = field(default_factory=dict)
    name_claims: tuple[Claim, ...] = ()  # where the store name disagrees with the file
    problem: str | None = None  # why the model cannot be described or run
    sha256: str | None = None  # of the file, when asked for

    @property
    def name(self) -> str:
        """The store name, or the path for a model given by path."""
        return self.entry.name if self.entry is not None else str(self.path)

    @property
    def usable(self) -> bool:
        """Whether llama.cpp can run it, as far as the store knows."""
        return (self.entry is None or self.entry.usable) and self.problem is None

    def readable(self) -> tuple[ModelCard, ChatFormat]:
        """The card and chat format; a listed model whose file could not be read raises its problem."""
        if self.card is None or self.chat_format is None:
            raise CandorError(f"{self.name} cannot be described: {self.problem}")
        return self.card, self.chat_format

    def license_text(self) -> str:
        """The licence texts that came with the model (HTML reduced to text), else the metadata's field."""
        text = "\n\n".join(readable(p) for p in self.license_files)
        return text or (self.card.license if self.card is not None and self.card.license else "")


def _described(
    path: Path, entry: StoreEntry | None, card: ModelCard, *, sha256: str | None = None
) -> ModelDescription:
    fmt = chat_format_of(card)
    return ModelDescription(
        path=path,
        entry=entry,
        card=card,
        chat_format=fmt,
        license_files=tuple(license_texts(None, entry)),
        parameters={**fmt.options, **(entry.parameters if entry is not None else {})},
        name_claims=tuple(check_name(entry.name, card)) if entry is not None else (),
        problem=None if entry is None or entry.usable else entry.problem,
        sha256=sha256,
    )


class Library:
    """The model store as the server and the CLI use it. The server keeps one on app.state."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._store = Store(settings)

    @property
    def settings(self) -> Settings:
        """The settings the store was opened with (its home, its caches)."""
        return self._store.settings

    # -- lookups -------------------------------------------------------------------------------------

    def list_models(self) -> list[ListedModel]:
        """Every model (the default model first), each with its identity and any name claims."""
        return self._store.list()

    def find(self, ref: str) -> StoreEntry | None:
        """The store entry a name refers to, or None."""
        return self._store.find(ref)

    def resolve(self, ref: str | Path | None, *, allow_paths: bool = True) -> tuple[Path, StoreEntry | None]:
        """A model reference (None: the default model, a name, or a .gguf path) -> its file and entry.

        With allow_paths=False (the HTTP API) only names resolve: a request never names a file.
        """
        return self._store.resolve(ref, allow_paths=allow_paths)

    def describe(
        self, ref: str | Path | None, *, allow_paths: bool = True, digest: bool = False
    ) -> ModelDescription:
        """Describe one model; an unknown name or an unreadable file raises the error that says the fix.

        Args:
            ref: a model name, a .gguf path (when allow_paths), or None for the default model.
            allow_paths: whether `ref` may be a path (False for the HTTP API).
            digest: also compute the file's sha256 (cached by file identity after the first time).
        Returns:
            The description; its card and chat format are always set.
        """
        path, entry = self._store.resolve(ref, allow_paths=allow_paths)
        card = checked_card(path)
        sha256 = file_sha256(path, self.settings.cache_dir) if digest else None
        return _described(path, entry, card, sha256=sha256)

    def describe_all(self) -> list[ModelDescription]:
        """Describe every model in the store (the default model first); a file that cannot be read is
        listed with its problem rather than failing the list."""
        described = []
        for listed in self._store.list():
            path = Path(listed.entry.path)
            if listed.card is None:
                described.append(ModelDescription(path, listed.entry, None, None, problem=listed.problem))
            else:
                described.append(_described(path, listed.entry, listed.card))
        return described

    def license_of(self, ref: str | None) -> ModelLicense:
        """A model's licence fields and the licence texts that came with it."""
        path, entry = self._store.resolve(ref)
        return license_of(entry.name if entry else str(path), checked_card(path), entry)

    # -- changes -------------------------------------------------------------------------------------

    def pull(self, ref: str, *, progress: Callable[[PullProgress], None] | None = None) -> StoreEntry:
        """Download a GGUF model from Hugging Face, verify it, and name it (see `pull`)."""
        from candor.store.hf import pull as hf_pull

        return hf_pull(self._store, ref, progress=progress)

    def import_file(self, path: str | Path, *, name: str | None = None) -> StoreEntry:
        """Register a local .gguf under a name, without copying it."""
        return self._store.import_file(path, name=name)

    def import_ollama(self, root: str | Path | None = None, *, probe: bool = True) -> list[OllamaImport]:
        """Register every model of an Ollama store, copying nothing; probe: test-load each in llama.cpp."""
        from candor.store.ollama import import_ollama as ollama_import

        return ollama_import(self._store, Path(root) if root else None, probe=probe)

    def copy(self, source: str, destination: str) -> StoreEntry:
        """Give a model another name (the file is shared, not copied)."""
        return self._store.copy(source, destination)

    def derive(
        self, source: StoreEntry, destination: str, *, system: str | None, parameters: dict[str, Any]
    ) -> StoreEntry:
        """A new name for `source`'s file with its own system prompt and default parameters."""
        copied = self._store.copy(source.name, destination)  # the name checks, the built-in name refused
        return self._store.registry.put(
            replace(
                copied,
                system=system,
                parameters=parameters,
                origin={**source.origin, "created_from": source.name},
            )
        )

    def remove(self, name: str) -> Removal:
        """Remove a name (and files only candor owns that nothing else uses)."""
        return self._store.remove(name)


# -- the same as functions, for `candor.*` and one-off callers -----------------------------------------


def describe_model(
    model: str | Path | None = None, *, digest: bool = False, settings: Settings | None = None
) -> ModelDescription:
    """Describe a model: its store entry, card, chat format, licence texts, default parameters, name claims.

    Args:
        model: a model name or .gguf path; None for the default model.
        digest: also compute the file's sha256.
        settings: resolved settings (default: from the environment).
    Returns:
        The description; its card and chat format are always set.
    """
    return Library(settings).describe(model, digest=digest)


def list_models(*, settings: Settings | None = None) -> list[ListedModel]:
    """Every model in the store (the default model first), each with its identity and any name claims."""
    return Library(settings).list_models()


def pull(
    ref: str, *, progress: Callable[[PullProgress], None] | None = None, settings: Settings | None = None
) -> StoreEntry:
    """Download a GGUF model from Hugging Face (`hf.co/ORG/REPO:QUANT`), verify it, and name it.

    Args:
        ref: `hf.co/ORG/REPO[:QUANT]`, `ORG/REPO:QUANT` or `ORG/REPO/FILE.gguf`.
        progress: called with download progress.
        settings: resolved settings (default: from the environment).
    Returns:
        The store entry; its name is what `candor.load()` takes.
    """
    return Library(settings).pull(ref, progress=progress)


def import_model(
    path: str | Path, *, name: str | None = None, settings: Settings | None = None
) -> StoreEntry:
    """Register a local .gguf under a name, without copying it."""
    return Library(settings).import_file(path, name=name)


def import_ollama(
    root: str | Path | None = None, *, probe: bool = True, settings: Settings | None = None
) -> list[OllamaImport]:
    """Register every model of an Ollama store ($OLLAMA_MODELS or ~/.ollama/models), copying nothing."""
    return Library(settings).import_ollama(root, probe=probe)


def copy_model(source: str, destination: str, *, settings: Settings | None = None) -> StoreEntry:
    """Give a model another name."""
    return Library(settings).copy(source, destination)


def remove_model(name: str, *, settings: Settings | None = None) -> Removal:
    """Remove a name (and files only candor owns that nothing else uses)."""
    return Library(settings).remove(name)


def license_of(name: str, card: ModelCard, entry: StoreEntry | None) -> ModelLicense:
    """The licence fields of a model already read, and the licence texts that came with it."""
    return model_license(name, card, license_texts(None, entry))


def licenses(model: str | None = None, *, settings: Settings | None = None) -> str | ModelLicense:
    """The engine's notices (no model), or a model's licence fields and texts."""
    if model is None:
        return engine_notices()
    return Library(settings).license_of(model)
