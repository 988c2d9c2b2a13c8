"""Pull GGUF models from Hugging Face into its shared cache, check every byte, then give them a name.

hf_select chooses the files a reference names; hf_download brings them into huggingface_hub's cache
(shared with llama.cpp's `-hf`), resuming partial downloads and checking each file against the hash the
hub published; this module ties the two together, test-loads the model, and registers its name only then.
"""

from __future__ import annotations

from collections.abc import Callable

from candor.engine.probe import probe_load
from candor.errors import UnsupportedModel
from candor.identity import file_sha256
from candor.preflight import checked_card
from candor.store.hf_download import (
    REVISION,
    Fetcher,
    PullProgress,
    Reporter,
    hub_cache_dir,
    hub_endpoint,
    list_repo,
)
from candor.store.hf_select import (
    DEFAULT_QUANT,
    HUB_HOSTS,
    HubFile,
    HubRef,
    ModelFiles,
    check_complete,
    choose_model,
    choose_projector,
    is_projector,
    license_files,
    model_files,
    parse_ref,
    quant_of,
    split_info,
    store_name,
)
from candor.store.registry import StoreEntry
from candor.store.service import Store

__all__ = [
    "DEFAULT_QUANT",
    "HUB_HOSTS",
    "REVISION",
    "SOURCE",
    "HubFile",
    "HubRef",
    "ModelFiles",
    "PullProgress",
    "choose_model",
    "choose_projector",
    "hub_cache_dir",
    "hub_endpoint",
    "is_projector",
    "license_files",
    "list_repo",
    "model_files",
    "parse_ref",
    "pull",
    "quant_of",
    "split_info",
    "store_name",
]

SOURCE = "hf"


def pull(store: Store, ref: str, *, progress: Callable[[PullProgress], None] | None = None) -> StoreEntry:
    """Download a GGUF model from Hugging Face, check its hashes, test-load it, and register its name.

    Args:
        store: the store that gets the name.
        ref: `hf.co/ORG/REPO[:QUANT]`, `ORG/REPO[:QUANT]` or `[hf.co/]ORG/REPO/FILE.gguf`.
        progress: called with each step and with download progress.
    Returns:
        The registered entry (`hf.co/ORG/REPO:QUANT`).
    """
    parsed = parse_ref(ref)
    endpoint = hub_endpoint()
    report = Reporter(progress)
    report.status("pulling manifest")
    commit, files = list_repo(parsed.repo, endpoint)
    model = choose_model(parsed, model_files(files), endpoint)
    check_complete(model, parsed.repo)
    name = store_name(parsed.repo, model)
    projector = choose_projector(files, model)
    licences = license_files(files)

    fetcher = Fetcher(store, parsed.repo, commit, endpoint, report)
    parts = tuple(fetcher.fetch(f, gguf=True) for f in model.parts)
    mmproj = fetcher.fetch(projector, gguf=True) if projector else None
    license_paths = tuple(fetcher.fetch(f, gguf=False) for f in licences)
    first = parts[0]
    sha256 = file_sha256(first, store.settings.cache_dir)
    entry = StoreEntry(
        name=name,
        path=str(first),
        size=sum(p.stat().st_size for p in parts),
        sha256=sha256,
        source=SOURCE,
        origin={
            "repo": parsed.repo,
            "revision": commit,
            "files": [f.path for f in (*model.parts, *([projector] if projector else []), *licences)],
            "endpoint": endpoint,
        },
        parts=tuple(str(p) for p in parts),
        mmproj=str(mmproj) if mmproj else None,
        license_files=tuple(str(p) for p in license_paths),
        owned_files=(),
    )
    existing = store.registry.find(name)
    if existing is not None and _same(existing, entry):
        report.status("success")
        return existing

    report.status("checking the model", model.parts[0])
    checked_card(first)
    result = probe_load(first)
    if not result.ok:
        raise UnsupportedModel(
            f"llama.cpp cannot load {model.parts[0].path} from {parsed.repo}: {result.reason}; nothing was "
            "registered (the files stay in the Hugging Face cache): upgrade llama-cpp-python, or pull "
            "another quantization"
        )
    report.status("writing manifest")
    registered = store.registry.put(entry)
    report.status("success")
    return registered


def _same(old: StoreEntry, new: StoreEntry) -> bool:
    """Whether a registered entry already stands for exactly these verified files."""
    fields = ("path", "parts", "size", "sha256", "source", "origin", "mmproj", "license_files")
    return old.usable and all(getattr(old, f) == getattr(new, f) for f in fields)
