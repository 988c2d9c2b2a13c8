"""The store: names that cannot become paths, the atomic index, import/cp/rm, names that cannot lie."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_factory import write_tiny_llama

import candor
from candor import InvalidParameter, ModelNotFound
from candor.identity import read_card
from candor.store import Registry, Store, StoreEntry, check_name, parse_name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("gemma", "gemma:latest"),
        ("qwen2.5:0.5b", "qwen2.5:0.5b"),
        ("hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
        ("user/model", "user/model:latest"),
    ],
)
def test_valid_names(text: str, expected: str) -> None:
    assert str(parse_name(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "../etc/passwd",
        "a/../b",
        "/abs/path",
        "a//b",
        "a\\b",
        "x y",
        "a:..",
        "a:b/c",
        "a:",
        ".hidden",
        "a/b/c/d/e",
        "x" * 600,
        "tag:" + "t" * 200,
        "nul\0byte",
    ],
)
def test_path_traversal_and_invalid_names_are_refused(text: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_name(text)


def test_registry_writes_atomically_and_survives_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path)
    entry = StoreEntry(name="a:latest", path="/x.gguf", size=1, sha256=None, source="file")
    registry.put(entry)
    before = registry.index.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(candor.CandorError, match="free disk space"):
        registry.put(StoreEntry(name="b:latest", path="/y.gguf", size=1, sha256=None, source="file"))
    monkeypatch.undo()
    assert registry.index.read_bytes() == before  # the old index is intact
    assert [p.name for p in registry.root.iterdir() if p.name.endswith(".tmp")] == []  # no debris
    assert [e.name for e in registry.entries()] == ["a:latest"]
    assert registry.find("A:LATEST") is not None  # lookups ignore case


def test_a_corrupt_index_is_a_clear_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.root.mkdir(parents=True)
    registry.index.write_text("{not json")
    with pytest.raises(candor.CandorError, match="move it aside"):
        registry.entries()


def test_import_registers_without_copying_and_runs_by_name(tiny_model_path: Path, candor_home: Path) -> None:
    entry = candor.import_model(tiny_model_path, name="tiny:1")
    assert entry.path == str(tiny_model_path.resolve())
    assert sum(f.stat().st_size for f in candor_home.rglob("*") if f.is_file()) < 50_000  # JSON only
    with candor.load("tiny:1", ctx=64, threads=1) as model:
        assert (
            model.generate("hello", stream=False, max_tokens=3, ignore_eos=True).usage.completion_tokens == 3
        )
    names = [m.entry.name for m in candor.list_models()]
    assert names[0] == "gemma-3-270m:Q4_K_M" and "tiny:1" in names


def test_default_import_name_comes_from_the_file(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "My Model Q8_0.gguf")
    assert candor.import_model(path).name == "my-model-q8_0:latest"


def test_import_refuses_bad_files_and_registers_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(candor.InvalidModelFile):
        candor.import_model(junk, name="junk")
    martian = write_tiny_llama(tmp_path / "martian.gguf", arch="martian")
    with pytest.raises(candor.CandorError, match="martian"):
        candor.import_model(martian, name="martian")
    assert [m.entry.name for m in candor.list_models()] == ["gemma-3-270m:Q4_K_M"]
    with pytest.raises(ModelNotFound):
        candor.import_model(tmp_path / "absent.gguf")


def test_cp_shares_the_file_and_rm_never_deletes_a_used_or_foreign_file(tiny_model_path: Path) -> None:
    candor.import_model(tiny_model_path, name="one")
    copy = candor.copy_model("one", "two:x")
    assert copy.path == str(tiny_model_path.resolve())
    first = candor.remove_model("one")
    assert first.deleted == () and any("another name uses it" in why for _, why in first.kept)
    second = candor.remove_model("two:x")
    assert second.deleted == () and any("not candor's to delete" in why for _, why in second.kept)
    assert tiny_model_path.exists()
    with pytest.raises(ModelNotFound):
        candor.remove_model("two:x")


def test_rm_deletes_only_owned_files_nobody_else_uses(tmp_path: Path, tiny_model_path: Path) -> None:
    owned = tmp_path / "owned.gguf"
    owned.write_bytes(tiny_model_path.read_bytes())
    store = Store()
    store.registry.put(
        StoreEntry(name="mine", path=str(owned), size=1, sha256=None, source="hf", owned_files=(str(owned),))
    )
    store.registry.put(StoreEntry(name="shared", path=str(owned), size=1, sha256=None, source="copy"))
    assert store.remove("mine").deleted == ()  # "shared" still points at it
    assert owned.exists()
    store.registry.put(
        StoreEntry(name="mine", path=str(owned), size=1, sha256=None, source="hf", owned_files=(str(owned),))
    )
    store.remove("shared")
    assert store.remove("mine").deleted == (str(owned),)
    assert not owned.exists()


def test_the_builtin_model_cannot_be_removed_or_shadowed(tiny_model_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="built-in"):
        candor.remove_model("gemma-3-270m:Q4_K_M")
    with pytest.raises(InvalidParameter, match="built-in"):
        candor.import_model(tiny_model_path, name="gemma-3-270m:Q4_K_M")


def test_a_name_whose_file_vanished_says_so(tmp_path: Path, tiny_model_path: Path) -> None:
    moved = tmp_path / "moving.gguf"
    moved.write_bytes(tiny_model_path.read_bytes())
    candor.import_model(moved, name="moving")
    moved.unlink()
    with pytest.raises(ModelNotFound, match="gone"):
        candor.load("moving")


def test_unknown_name_and_hf_short_form(tiny_model_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="candor pull"):
        candor.load("qwen3:8b")
    store = Store()
    store.registry.put(
        StoreEntry(name="hf.co/org/repo:Q8_0", path=str(tiny_model_path), size=1, sha256=None, source="hf")
    )
    assert store.resolve("org/repo:Q8_0")[0] == tiny_model_path
    assert store.resolve("hf.co/org/repo:q8_0")[0] == tiny_model_path


def test_a_misleading_name_is_flagged_and_an_honest_one_is_not(tmp_path: Path) -> None:
    distill = write_tiny_llama(
        tmp_path / "distill.gguf",
        name="DeepSeek R1 Distill Qwen 32B",
        finetune="Distill",
        arch="qwen2",
        base_models=[{"name": "Qwen2.5 32B", "organization": "Qwen"}],
    )
    card = read_card(distill)
    claims = check_name("deepseek-r1:32b", card)
    kinds = {c.kind for c in claims}
    assert kinds == {"family", "size"}
    family = next(c.message for c in claims if c.kind == "family")
    assert "qwen2" in family and "distill" in family and "not deepseek itself" in family
    assert [c.kind for c in check_name("hf.co/org/DeepSeek-R1-Distill-Qwen:Q4_K_M", card)] == []
    assert [c.kind for c in check_name("llama3:8b", card)] == ["family", "size"]
    assert check_name("my-model:latest", card) == []


def test_sizes_in_names_allow_real_world_rounding(tmp_path: Path) -> None:
    card = read_card(write_tiny_llama(tmp_path / "t.gguf"))
    n = card.parameter_count
    honest = f"thing:{n / 1e3 * 1.2 / 1e3:.2f}m"  # 20% off, as "7b" is for a 7.24B model
    assert check_name(honest, card) == []
    assert check_name("thing:8x7b", card) == []  # experts x size is not a parameter count


def test_licenses_engine_notices_and_model_terms() -> None:
    notices = candor.licenses()
    assert isinstance(notices, str)
    for needle in ("The ggml authors", "Andrei Betlen", "The candor authors", "MIT License"):
        assert needle in notices
    terms = candor.licenses("gemma-3-270m:Q4_K_M")
    assert not isinstance(terms, str)
    assert terms.license == "gemma"
    ((path, text),) = terms.texts
    assert path.name == "GEMMA_TERMS.html"
    assert "Gemma Terms of Use" in text and "<div" not in text


def test_the_gemma_terms_lose_the_web_pages_furniture_and_keep_every_clause() -> None:
    from candor.default_model import default_model_terms

    terms = candor.licenses("gemma-3-270m:Q4_K_M")
    assert not isinstance(terms, str)
    ((_, text),) = terms.texts
    lines = text.splitlines()
    assert lines[:2] == ["Gemma Terms of Use", "Last modified: March 24, 2025"]
    for clutter in ("Send feedback", "Learn more", "released, a model tuned", "Home", "Docs"):
        assert clutter not in lines and not any(line.startswith(clutter) for line in lines), clutter
    page = default_model_terms().read_text(encoding="utf-8")
    # Every heading of the terms (the page lists them in data-text attributes), in order, and the last words.
    headings = re.findall(r'<h[23] id="[^"]*" data-text="([^"]*)"', page)
    assert len(headings) > 20 and "4.9 No Waiver" in headings
    found = [lines.index(h.replace("&quot;", '"')) for h in headings]
    assert found == sorted(found)
    assert lines[-1] == "Note: Previous versions of these Terms are archived here."


def test_licence_pages_keep_their_text_and_drop_site_furniture(tmp_path: Path) -> None:
    from candor.store.licenses import readable

    page = tmp_path / "terms.html"
    page.write_text(
        "<!doctype html><html><head><title>Terms</title><style>p{}</style></head><body>"
        '<header><a href="/">Site home</a></header><nav>Products | Docs</nav>'
        '<div role="banner">New model out now!</div>'
        "<article><header><h1>Example License</h1></header>"
        '<ul class="devsite-breadcrumb-list"><li>Home</li><li>Legal</li></ul>'
        '<div class="announcement nocontent">Try our app</div><button>Send feedback</button>'
        "<p>1. You may use this<br/>software freely.<p>2. Keep this notice &amp; the <b>copyright</b>."
        '<span hidden>tracking</span><span aria-hidden="true">icon</span><img src="x.png">'
        "<ol><li>first<li>second</ol>"
        "<footer><p>Last updated 2025</p></footer>"
        "<aside><p>Note: older versions are archived.</p></aside>"
        "<template><p>Rate this page</p></template></article>"
        '<footer role="contentinfo">Site footer</footer><script>track()</script></body></html>',
        encoding="utf-8",
    )
    assert readable(page).splitlines() == [
        "Example License",
        "1. You may use this",
        "software freely.",
        "2. Keep this notice & the copyright.",
        "first",
        "second",
        "Last updated 2025",
        "Note: older versions are archived.",
    ]
    plain = tmp_path / "LICENSE"
    plain.write_text("MIT License\n\n<b>kept as written</b>\n", encoding="utf-8")
    assert readable(plain) == "MIT License\n\n<b>kept as written</b>\n"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "candor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_import_list_show_cp_rm(tmp_path: Path) -> None:
    distill = write_tiny_llama(
        tmp_path / "distill.gguf",
        name="DeepSeek R1 Distill Qwen 32B",
        finetune="Distill",
        arch="llama",
        base_models=[{"name": "Qwen2.5 32B"}],
    )
    imported = cli("import", str(distill), "--name", "deepseek-r1:32b")
    assert imported.returncode == 0, imported.stderr
    assert "misleading name" in imported.stdout and "no bytes copied" in imported.stdout
    listing = cli("list")
    assert "deepseek-r1:32b" in listing.stdout and "misleading name" in listing.stdout
    rows = json.loads(cli("list", "--json").stdout)
    row = next(r for r in rows if r["name"] == "deepseek-r1:32b")
    assert row["architecture"] == "llama" and row["finetune"] == "Distill" and len(row["name_claims"]) == 2
    shown = json.loads(cli("show", "deepseek-r1:32b", "--json").stdout)
    assert shown["store"]["name"] == "deepseek-r1:32b" and shown["name_claims"]
    assert "MISLEADING" in cli("show", "deepseek-r1:32b").stdout
    assert cli("cp", "deepseek-r1:32b", "honest-distill").returncode == 0
    removed = cli("rm", "deepseek-r1:32b")
    assert removed.returncode == 0 and "another name uses it" in removed.stderr
    assert distill.exists()
    bad = cli("rm", "../../etc/passwd")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: invalid model name")
    missing = cli("rm", "nothing-here")
    assert missing.returncode == 1 and "no model named" in missing.stderr
    lic = cli("licenses")
    assert lic.returncode == 0 and "The ggml authors" in lic.stdout


def test_a_repo_name_without_tag_finds_its_pulled_quantization(tiny_model_path: Path) -> None:
    store = Store()
    store.registry.put(
        StoreEntry(name="hf.co/org/repo:Q8_0", path=str(tiny_model_path), size=1, sha256=None, source="hf")
    )
    assert store.find("hf.co/org/repo") is not None and store.find("org/repo") is not None
    store.registry.put(
        StoreEntry(name="hf.co/org/repo:Q4_K_M", path=str(tiny_model_path), size=1, sha256=None, source="hf")
    )
    found = store.find("org/repo")
    assert found is not None and found.name == "hf.co/org/repo:Q4_K_M"
    store.registry.put(
        StoreEntry(name="hf.co/org/other:Q8_0", path=str(tiny_model_path), size=1, sha256=None, source="hf")
    )
    store.registry.put(
        StoreEntry(name="hf.co/org/other:Q6_K", path=str(tiny_model_path), size=1, sha256=None, source="hf")
    )
    assert store.find("org/other") is None  # ambiguous: the user must say which
