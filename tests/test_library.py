"""describe_model() and the Library: one description of a model for `candor show`, /api/show, /api/tags and
/v1/models, and the store as the server reaches it (app.state.library, not the scheduler)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from candor.config import Settings
from candor.errors import CandorError, InvalidParameter, ModelNotFound
from candor.identity import file_sha256
from candor.prompt import choose_chat_format
from candor.scheduler import Scheduler, SchedulerConfig
from candor.server.app import create_app
from candor.store.library import Library, StoreEntry, describe_model
from candor.store.registry import Registry


def _register(home: Path, name: str, path: Path, **fields: Any) -> StoreEntry:
    size = path.stat().st_size if path.exists() else 1
    entry = StoreEntry(name=name, path=str(path), size=size, sha256=None, source="file", **fields)
    return Registry(home).put(entry)


def test_a_named_model_is_described_from_its_file_its_entry_and_its_chat_format(
    candor_home: Path, tiny_model_path: Path
) -> None:
    _register(candor_home, "terse:latest", tiny_model_path, parameters={"num_predict": 4, "temperature": 0.1})
    described = describe_model("terse")
    card, fmt = described.readable()
    assert described.entry is not None and described.entry.name == "terse:latest"
    assert described.name == "terse:latest" and described.path == tiny_model_path
    assert card.architecture == "llama" and card.chat_template is None
    # the tiny model has no template: the same fallback the engine renders with
    expected = choose_chat_format(card.chat_template, card.architecture, card.special_tokens_present)
    assert fmt == expected and fmt.is_fallback
    # the chat format's bounds first, the name's own parameters over them
    assert fmt.options["num_predict"] != 4
    assert dict(described.parameters) == {**fmt.options, "num_predict": 4, "temperature": 0.1}
    assert described.name_claims == () and described.problem is None and described.usable
    assert described.license_files == () and described.sha256 is None


def test_a_name_that_contradicts_the_file_carries_its_claim(candor_home: Path, tiny_model_path: Path) -> None:
    _register(candor_home, "llama-70b:q4", tiny_model_path)
    [claim] = describe_model("llama-70b:q4").name_claims
    assert claim.kind == "size" and "70B" in claim.message


def test_a_model_given_by_path_has_no_entry_claims_or_licence_files(tiny_model_path: Path) -> None:
    described = describe_model(tiny_model_path, digest=True)
    card, fmt = described.readable()
    assert described.entry is None and described.name == str(tiny_model_path)
    assert dict(described.parameters) == dict(fmt.options)
    assert described.name_claims == () and described.license_files == ()
    assert described.sha256 == file_sha256(tiny_model_path, Settings.from_env().cache_dir)
    assert described.license_text() == (card.license or "")


def test_the_default_model_comes_with_its_licence_text(default_model_path: Path) -> None:
    described = describe_model()
    card, fmt = described.readable()
    assert card.architecture == "gemma3" and fmt.name == "gemma"
    [terms] = described.license_files
    assert terms.is_file()
    assert "Gemma Terms of Use" in described.license_text()


def test_licence_files_are_read_as_text_and_the_metadata_field_is_the_fallback(
    candor_home: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    page = tmp_path / "LICENSE.html"
    page.write_text("<html><nav>menu</nav><article><h1>The Licence</h1><p>Use it.</p></article></html>")
    _register(
        candor_home, "licensed:latest", tiny_model_path, license_files=(str(page), str(tmp_path / "gone"))
    )
    described = describe_model("licensed")
    assert described.license_files == (page,)  # a file that went missing is not listed
    assert described.license_text() == "The Licence\nUse it."


def test_the_http_api_names_models_and_never_files(tiny_model_path: Path) -> None:
    library = Library()
    with pytest.raises(InvalidParameter):
        library.describe(str(tiny_model_path), allow_paths=False)
    with pytest.raises(ModelNotFound, match="candor pull"):
        library.describe("nope:x", allow_paths=False)


def test_a_listing_reports_an_unreadable_file_as_its_problem(
    candor_home: Path, tiny_model_path: Path
) -> None:
    _register(candor_home, "fine:latest", tiny_model_path)
    _register(candor_home, "broken:latest", candor_home / "no.gguf")
    listed = {d.name: d for d in Library().describe_all()}
    assert next(iter(listed)) == "gemma-3-270m:Q4_K_M"  # the default model first
    broken = listed["broken:latest"]
    assert broken.card is None and broken.chat_format is None and not broken.usable
    assert broken.problem and "no.gguf" in broken.problem
    with pytest.raises(CandorError, match="broken:latest cannot be described"):
        broken.readable()
    assert listed["fine:latest"].usable and listed["fine:latest"].readable()[0].architecture == "llama"


def test_derive_gives_a_model_a_name_with_its_own_system_prompt_and_parameters(
    candor_home: Path, tiny_model_path: Path
) -> None:
    source = _register(candor_home, "base:latest", tiny_model_path, parameters={"temperature": 0.5})
    library = Library()
    made = library.derive(source, "terse", system="Be terse.", parameters={"temperature": 0.5, "top_k": 3})
    assert made.name == "terse:latest" and made.origin["created_from"] == "base:latest"
    described = library.describe("terse")
    assert described.entry is not None and described.entry.system == "Be terse."
    assert described.parameters["top_k"] == 3 and described.parameters["temperature"] == 0.5
    with pytest.raises(InvalidParameter, match="built-in default model"):
        library.derive(source, "gemma-3-270m:Q4_K_M", system=None, parameters={})


def test_the_server_reaches_the_store_through_its_library(tmp_path: Path, tiny_model_path: Path) -> None:
    # The scheduler's home and the library's differ: what the store routes see is the library's.
    theirs = Settings.from_env()
    ours = Settings.from_env({**os.environ, "CANDOR_HOME": str(tmp_path / "library-home")})
    _register(ours.home, "only-here:latest", tiny_model_path)
    scheduler = Scheduler(theirs, SchedulerConfig(allow_paths=False))
    try:
        app = create_app(scheduler=scheduler, library=Library(ours))
        with TestClient(app, base_url="http://127.0.0.1:11434") as client:
            tags = [m["name"] for m in client.get("/api/tags").json()["models"]]
            models = [m["id"] for m in client.get("/v1/models").json()["data"]]
            shown = client.post("/api/show", json={"model": "only-here"})
            assert (
                client.post("/api/copy", json={"source": "only-here", "destination": "copied"}).status_code
                == 200
            )
            deleted = client.request("DELETE", "/api/delete", json={"model": "copied"})
        assert "only-here:latest" in tags and "only-here:latest" in models
        assert shown.status_code == 200 and shown.json()["details"]["family"] == "llama"
        assert deleted.status_code == 200
        assert Registry(ours.home).find("copied") is None and Registry(theirs.home).find("only-here") is None
    finally:
        scheduler.close()
