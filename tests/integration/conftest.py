"""Integration tests run the real default model through real llama.cpp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import candor


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def gemma(default_model_path: Path) -> Iterator[candor.Model]:
    """The default model, loaded once per test module (2 threads, 2048-token context)."""
    with candor.load(default_model_path, ctx=2048, threads=2) as model:
        yield model
