"""Library functions for the model store: what `candor pull/list/rm/cp/import/licenses` call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from candor.config import Settings
from candor.preflight import checked_card
from candor.store import ListedModel, Removal, Store, StoreEntry
from candor.store.licenses import ModelLicense, engine_notices, license_texts, model_license

if TYPE_CHECKING:
    from candor.store.hf import PullProgress
    from candor.store.ollama import OllamaImport


def list_models(*, settings: Settings | None = None) -> list[ListedModel]:
    """Every model in the store (the default model first), each with its identity and any name claims."""
    return Store(settings).list()


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
    from candor.store.hf import pull as hf_pull

    return hf_pull(Store(settings), ref, progress=progress)


def import_model(
    path: str | Path, *, name: str | None = None, settings: Settings | None = None
) -> StoreEntry:
    """Register a local .gguf under a name, without copying it."""
    return Store(settings).import_file(path, name=name)


def import_ollama(root: str | Path | None = None, *, settings: Settings | None = None) -> list[OllamaImport]:
    """Register every model of an Ollama store ($OLLAMA_MODELS or ~/.ollama/models), copying nothing."""
    from candor.store.ollama import import_ollama as ollama_import

    return ollama_import(Store(settings), Path(root) if root else None)


def copy_model(source: str, destination: str, *, settings: Settings | None = None) -> StoreEntry:
    """Give a model another name."""
    return Store(settings).copy(source, destination)


def remove_model(name: str, *, settings: Settings | None = None) -> Removal:
    """Remove a name (and files only candor owns that nothing else uses)."""
    return Store(settings).remove(name)


def licenses(model: str | None = None, *, settings: Settings | None = None) -> str | ModelLicense:
    """The engine's notices (no model), or a model's licence fields and texts."""
    if model is None:
        return engine_notices()
    store = Store(settings)
    path, entry = store.resolve(model)
    return model_license(entry.name if entry else str(path), checked_card(path), license_texts(store, entry))
