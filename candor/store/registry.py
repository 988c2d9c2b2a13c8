"""The store's index: model names -> files, kept in one JSON file written atomically under a lock."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from candor.errors import CandorError, InvalidParameter, ModelNotFound
from candor.store.names import ModelName, parse_name

SCHEMA = 1


def now_iso() -> str:
    """The current time as an ISO-8601 string with timezone."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoreEntry:
    """One name in the store and the file it stands for."""

    name: str  # canonical "name:tag"
    path: str  # the GGUF file (the first part of a split model)
    size: int  # bytes of every part together
    sha256: str | None  # of `path`, verified when the entry was made
    source: str  # "hf", "file", "ollama" or "copy"
    origin: dict[str, Any] = field(default_factory=dict)  # repo/file/revision, Ollama manifest...
    parts: tuple[str, ...] = ()  # every file of a split model, `path` first
    mmproj: str | None = None  # vision projector fetched alongside
    license_files: tuple[str, ...] = ()  # licence texts that came with the model
    owned_files: tuple[str, ...] = ()  # files candor created and may delete on `rm`
    system: str | None = None  # default system prompt (Ollama `system` layer)
    parameters: dict[str, Any] = field(default_factory=dict)  # default options (Ollama `params` layer)
    usable: bool = True
    problem: str | None = None  # why llama.cpp cannot run it, when unusable
    created_at: str = field(default_factory=now_iso)
    modified_at: str = field(default_factory=now_iso)

    @property
    def model_name(self) -> ModelName:
        """The parsed name."""
        return parse_name(self.name)

    def files(self) -> tuple[str, ...]:
        """Every file this entry refers to."""
        return tuple(
            dict.fromkeys(
                (self.path, *self.parts, *((self.mmproj,) if self.mmproj else ()), *self.license_files)
            )
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        data = asdict(self)
        for key in ("parts", "license_files", "owned_files"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreEntry:
        """Inverse of to_json; unknown keys (from a newer candor) are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("parts", "license_files", "owned_files"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)


def _key(name: ModelName) -> str:
    return str(name).lower()  # lookups ignore case, as Ollama's do


class Registry:
    """Read and change the index. Every change is read-modify-write under a file lock, then renamed in."""

    def __init__(self, home: Path) -> None:
        self.root = home / "store"
        self.index = self.root / "registry.json"
        self._lock = FileLock(str(self.root / "registry.lock"))

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CandorError(
                f"the model index {self.index} is unreadable ({exc}); move it aside and re-import your models"
            ) from None
        models = raw.get("models", {}) if isinstance(raw, dict) else {}
        return models if isinstance(models, dict) else {}

    def _write(self, models: dict[str, dict[str, Any]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".registry.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"schema": SCHEMA, "models": models}, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.index)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            fix = "free disk space" if exc.errno == errno.ENOSPC else "check that candor may write there"
            raise CandorError(
                f"cannot write the model index {self.index} ({exc.strerror or exc}); {fix} and run the "
                "command again (the index is unchanged)"
            ) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            models = self._read()
            yield models
            self._write(models)

    def entries(self) -> list[StoreEntry]:
        """Every entry, sorted by name."""
        return sorted((StoreEntry.from_json(v) for v in self._read().values()), key=lambda e: e.name.lower())

    def find(self, name: str | ModelName) -> StoreEntry | None:
        """The entry for a name, or None."""
        parsed = parse_name(name) if isinstance(name, str) else name
        data = self._read().get(_key(parsed))
        return StoreEntry.from_json(data) if data else None

    def get(self, name: str | ModelName) -> StoreEntry:
        """The entry for a name; ModelNotFound says how to get one."""
        entry = self.find(name)
        if entry is None:
            raise ModelNotFound(
                f"no model named {str(name)!r} in the store; see `candor list`, or get it with "
                "`candor pull hf.co/ORG/REPO:QUANT` or `candor import FILE.gguf --name NAME`"
            )
        return entry

    def put(self, entry: StoreEntry, *, replace_existing: bool = True) -> StoreEntry:
        """Add or replace an entry."""
        key = _key(entry.model_name)
        with self._editing() as models:
            old = models.get(key)
            if old is not None and not replace_existing:
                raise InvalidParameter(f"a model named {old['name']!r} already exists; remove it first")
            if old is not None:
                entry = replace(
                    entry, created_at=old.get("created_at", entry.created_at), modified_at=now_iso()
                )
            models[key] = entry.to_json()
        return entry

    def remove(self, name: str | ModelName) -> StoreEntry:
        """Remove a name; returns what it pointed at."""
        parsed = parse_name(name) if isinstance(name, str) else name
        with self._editing() as models:
            data = models.pop(_key(parsed), None)
        if data is None:
            raise ModelNotFound(f"no model named {str(parsed)!r} in the store; see `candor list`")
        return StoreEntry.from_json(data)

    def users_of(self, path: str) -> list[StoreEntry]:
        """Entries that refer to a file."""
        return [e for e in self.entries() if path in e.files()]
