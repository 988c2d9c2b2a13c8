"""import-ollama: Ollama's models registered in place, checked, and never copied or deleted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ollama_store import (
    EXPECTED,
    GO_TEMPLATE,
    HOST,
    LICENSE_TEXT,
    PARAMS,
    PROJECTOR,
    SYSTEM_PROMPT,
    OllamaStore,
    build_ollama_store,
    library,
)

import candor
from candor.errors import CandorError, ModelNotFound
from candor.store import Store
from candor.store.ollama import LORA_PROBLEM, TEMPLATE_NOTE, OllamaImport, import_ollama


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> OllamaStore:
    """The fixture Ollama store (read-only for the tests)."""
    base = tmp_path_factory.mktemp("ollama")
    return build_ollama_store(base / "models", base / "scratch")


@pytest.fixture(scope="module")
def first_import(
    ollama: OllamaStore, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[OllamaImport]]:
    """One probing import into its own CANDOR_HOME, shared by the tests that only read its results."""
    home = tmp_path_factory.mktemp("candor-home-ollama")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CANDOR_HOME", str(home))
        return home, import_ollama(Store(), ollama.root)


def _by_name(results: list[OllamaImport]) -> dict[str, OllamaImport]:
    return {r.ollama_name: r for r in results}


def _tree_bytes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_every_fixture_model_gets_its_status(first_import: tuple[Path, list[OllamaImport]]) -> None:
    results = _by_name(first_import[1])
    assert {name: r.status for name, r in results.items()} == EXPECTED
    for result in results.values():
        assert (result.entry is None) == (result.status == "skipped")
        assert bool(result.reason) == (result.status != "imported")


def test_names_map_as_ollama_shows_them(first_import: tuple[Path, list[OllamaImport]]) -> None:
    results = _by_name(first_import[1])
    assert results["tiny:latest"].name == "tiny:latest"
    assert results["someone/tiny:v1"].name == "someone/tiny:v1"
    assert results["hf.co/user/tiny-GGUF:Q8_0"].name == "hf.co/user/tiny-GGUF:Q8_0"


def test_entries_point_at_ollama_blobs(
    ollama: OllamaStore, first_import: tuple[Path, list[OllamaImport]]
) -> None:
    entry = _by_name(first_import[1])["tiny:latest"].entry
    assert entry is not None
    assert Path(entry.path) == ollama.good_blob.resolve()
    assert entry.source == "ollama"
    assert entry.owned_files == ()
    assert entry.size == ollama.good_blob.stat().st_size
    assert entry.sha256 == ollama.good_blob.name.removeprefix("sha256-")
    assert entry.usable and entry.problem is None
    assert entry.origin["ollama_root"] == str(ollama.root.resolve())
    assert entry.origin["ollama_name"] == "tiny:latest"
    assert entry.origin["manifest"].endswith(str(Path("manifests", *library("tiny"))))


def test_system_params_and_license_carried_template_ignored(
    first_import: tuple[Path, list[OllamaImport]],
) -> None:
    entry = _by_name(first_import[1])["tiny:chatty"].entry
    assert entry is not None
    assert entry.system == SYSTEM_PROMPT
    kept = {k: v for k, v in PARAMS.items() if k not in ("num_gpu", "mirostat")}
    assert entry.parameters == kept
    assert entry.origin["ollama_params_ignored"] == ["mirostat", "num_gpu"]
    assert entry.origin["ollama_template"] == TEMPLATE_NOTE
    assert len(entry.license_files) == 1
    assert Path(entry.license_files[0]).read_text() == LICENSE_TEXT
    assert entry.mmproj is not None and Path(entry.mmproj).read_bytes() == PROJECTOR
    assert GO_TEMPLATE not in json.dumps(entry.to_json())


def test_unusable_models_say_why(first_import: tuple[Path, list[OllamaImport]]) -> None:
    results = _by_name(first_import[1])
    for name in ("broken:latest", "martian:latest"):
        reason = results[name].reason
        assert "Ollama rewrites" in reason and "Hugging Face" in reason, reason
        entry = results[name].entry
        assert entry is not None and not entry.usable and entry.problem == reason
    assert "martian" in results["martian:latest"].reason
    assert "\n" not in results["martian:latest"].reason and "Warning" not in results["martian:latest"].reason
    assert results["lora:latest"].reason == LORA_PROBLEM
    assert "does not match its digest" in results["tampered:latest"].reason


def test_skipped_models_say_why(
    first_import: tuple[Path, list[OllamaImport]], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _by_name(first_import[1])
    assert "missing" in results["dangling:latest"].reason
    assert "invalid digest" in results["evil:latest"].reason
    assert "not valid JSON" in results["malformed:latest"].reason
    assert "no model layer" in results["nomodel:latest"].reason
    monkeypatch.setenv("CANDOR_HOME", str(first_import[0]))
    registered = {e.name for e in Store().registry.entries()}
    assert registered == {name for name, status in EXPECTED.items() if status != "skipped"}


def test_import_copies_no_bytes(ollama: OllamaStore, candor_home: Path) -> None:
    before_ollama = _tree_bytes(ollama.root)
    before_home = sum(_tree_bytes(candor_home).values())
    results = import_ollama(Store(), ollama.root, probe=False)
    assert _tree_bytes(ollama.root) == before_ollama  # Ollama's store is read, never written
    added = _tree_bytes(candor_home)
    assert all(name.endswith((".json", ".lock")) for name in added), added
    assert sum(added.values()) - before_home < 64 * 1024
    for result in results:
        if result.entry is not None:
            assert Path(result.entry.path).is_relative_to(ollama.root.resolve() / "blobs")


def test_reimport_is_idempotent(ollama: OllamaStore) -> None:
    store = Store()
    first = import_ollama(store, ollama.root, probe=False)
    entries = {e.name: e for e in store.registry.entries()}
    second = import_ollama(store, ollama.root, probe=False)
    again = {e.name: e for e in store.registry.entries()}
    assert [(r.name, r.status, r.reason) for r in first] == [(r.name, r.status, r.reason) for r in second]
    assert entries.keys() == again.keys()
    for name, entry in entries.items():
        assert again[name].created_at == entry.created_at
        assert again[name].to_json() | {"modified_at": ""} == entry.to_json() | {"modified_at": ""}


def test_missing_root_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFound, match="OLLAMA_MODELS") as info:
        import_ollama(Store(), tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert "/usr/share/ollama/.ollama/models" in str(info.value)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelNotFound, match="elsewhere"):
        import_ollama(Store())


def test_root_defaults_to_ollama_models(ollama: OllamaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama.root))
    results = import_ollama(Store(), probe=False)
    assert _by_name(results)["tiny:latest"].status == "imported"


def test_a_parent_folder_is_suggested(ollama: OllamaStore) -> None:
    with pytest.raises(ModelNotFound, match="did you mean"):
        import_ollama(Store(), ollama.root.parent)


def test_imported_model_runs(
    first_import: tuple[Path, list[OllamaImport]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDOR_HOME", str(first_import[0]))
    path, entry = Store().resolve("tiny:latest")
    assert entry is not None and entry.source == "ollama"
    with candor.load(path, ctx=128, threads=1) as model:
        done = model.generate("hello", stream=False, temperature=0, max_tokens=4)
    assert done.usage.completion_tokens > 0


def test_unusable_model_is_refused_with_its_reason(
    first_import: tuple[Path, list[OllamaImport]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDOR_HOME", str(first_import[0]))
    with pytest.raises(CandorError, match="martian"):
        Store().resolve("martian:latest")
    with pytest.raises(CandorError, match="LoRA"):
        Store().resolve("lora:latest")


def test_rm_keeps_the_ollama_blob(ollama: OllamaStore) -> None:
    store = Store()
    import_ollama(store, ollama.root, probe=False)
    removal = store.remove("tiny:latest")
    assert removal.deleted == ()
    assert ollama.good_blob.is_file()
    for name in ("someone/tiny:v1", "hf.co/user/tiny-GGUF:Q8_0", "tiny:chatty"):
        store.remove(name)
    removal = store.remove("lora:latest")  # the last name on the good blob
    assert removal.deleted == ()
    assert any("Ollama" in why for _, why in removal.kept)
    assert ollama.good_blob.is_file()


def test_existing_candor_model_is_not_overwritten(ollama: OllamaStore, tiny_model_path: Path) -> None:
    store = Store()
    store.import_file(tiny_model_path, name="tiny:latest", probe=False)
    result = _by_name(import_ollama(store, ollama.root, probe=False))["tiny:latest"]
    assert result.status == "skipped" and "candor rm tiny:latest" in result.reason
    assert store.registry.get("tiny:latest").source == "file"


def _mini_store(root: Path, ollama: OllamaStore) -> OllamaStore:
    mini = OllamaStore(root)
    mini.good_blob = mini.blob_dir / ollama.good_blob.name
    mini.blob_dir.mkdir(parents=True)
    os.link(ollama.good_blob, mini.good_blob)
    (mini.root / "manifests").mkdir()
    return mini


def test_symlinks_and_bad_names_are_not_followed(ollama: OllamaStore, tmp_path: Path) -> None:
    mini = _mini_store(tmp_path / "models", ollama)
    digest = "sha256:" + mini.good_blob.name.removeprefix("sha256-")
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": 1}
    outside = tmp_path / "outside"
    outside.mkdir()
    real = mini.write_manifest(library("real"), [layer])
    # a manifest that is a symlink (even to a good manifest) and a namespace that is a symlink
    (real.parent.parent / "linked").mkdir()
    (real.parent.parent / "linked" / "latest").symlink_to(real)
    (mini.root / "manifests" / HOST / "sneaky").symlink_to(outside, target_is_directory=True)
    # a blob that is a symlink leading out of the root
    secret = outside / "secret.gguf"
    secret.write_bytes(ollama.good_blob.read_bytes())
    fake_hex = "cd" * 32
    (mini.blob_dir / f"sha256-{fake_hex}").symlink_to(secret)
    mini.write_manifest(library("escape"), [{**layer, "digest": f"sha256:{fake_hex}"}])
    # names that are not valid candor names
    mini.write_manifest((HOST, "library", "bad name", "latest"), [layer])
    mini.write_manifest((HOST, "library", "model", "-tag"), [layer])
    mini.write_raw_manifest((HOST, "library", "shallow"), b"{}")

    results = _by_name(import_ollama(Store(), mini.root, probe=False))
    assert results["real:latest"].status == "imported"
    assert "symbolic link" in results["linked:latest"].reason
    assert "symbolic link" in results[f"{HOST}/sneaky"].reason
    assert "outside the Ollama folder" in results["escape:latest"].reason
    assert "not a valid model name" in results["bad name:latest"].reason
    assert "not a valid model name" in results["model:-tag"].reason
    assert "not a manifest" in results[f"{HOST}/library/shallow"].reason
    assert {r.status for n, r in results.items() if n != "real:latest"} == {"skipped"}
    assert {e.name for e in Store().registry.entries()} == {"real:latest"}


def test_malicious_digest_never_becomes_a_path(ollama: OllamaStore, tmp_path: Path) -> None:
    mini = _mini_store(tmp_path / "models", ollama)
    for i, digest in enumerate(
        (
            "sha256:../../etc/passwd",
            "sha256-" + "a" * 63 + "/",
            "sha256:" + "A" * 64,
            "sha256:" + "a" * 64 + "\n",
            "sha512:" + "a" * 64,
            "/etc/passwd",
        )
    ):
        layer = {"mediaType": "application/vnd.ollama.image.system", "digest": digest, "size": 1}
        good = "sha256:" + mini.good_blob.name.removeprefix("sha256-")
        model = {"mediaType": "application/vnd.ollama.image.model", "digest": good, "size": 1}
        mini.write_manifest(library(f"m{i}"), [model, layer])
    results = import_ollama(Store(), mini.root, probe=False)
    assert len(results) == 6
    assert all(r.status == "skipped" and "invalid digest" in r.reason for r in results)


def test_cli_import_ollama(ollama: OllamaStore, candor_home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CANDOR_HOME": str(candor_home)}
    env.pop("OLLAMA_MODELS", None)
    done = subprocess.run(
        [sys.executable, "-m", "candor", "import-ollama", str(ollama.root), "--no-probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "imported  tiny:latest" in lines
    assert any(line.startswith("unusable  broken:latest: ") for line in lines)
    assert any(line.startswith("skipped   evil:latest: ") for line in lines)
    assert lines[-1].startswith("5 imported, 3 unusable, 4 skipped")  # martian needs the probe
    missing = subprocess.run(
        [sys.executable, "-m", "candor", "import-ollama", str(tmp_path / "nowhere")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert missing.returncode == 1
    assert "OLLAMA_MODELS" in missing.stderr and "Traceback" not in missing.stderr
