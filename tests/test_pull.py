"""`candor pull` against a fake Hugging Face Hub on 127.0.0.1: names, quantizations, splits, projectors,
licences, resume, hash checks, errors, and a pulled model that really runs."""

from __future__ import annotations

import argparse
import functools
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import gguf
import pytest
from gguf_factory import write_tiny_llama
from hf_hub_server import FakeFile, FakeHub, FakeRepo, closed_port, running_hub, sha256_hex
from huggingface_hub import constants

import candor
import candor.identity
from candor.errors import (
    DownloadError,
    IntegrityError,
    InvalidModelFile,
    InvalidParameter,
    ModelNotFound,
    UnsupportedModel,
)
from candor.store import Store
from candor.store.hf import (
    HubFile,
    HubRef,
    PullProgress,
    choose_model,
    model_files,
    parse_ref,
    pull,
    quant_of,
)

TOKEN = "hf_test_token"


# -- the fake hub's repos --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blobs:
    """Tiny GGUF files (bytes) that the fake repos are made of."""

    f32: bytes
    q8: bytes
    f16: bytes
    other: bytes
    split3: tuple[tuple[str, bytes], ...]  # (suffix "-0000k-of-00003.gguf", bytes)
    split2: tuple[tuple[str, bytes], ...]
    alien: bytes  # an architecture llama.cpp does not know


def _split(directory: Path, stem: str, max_tensors: int) -> tuple[tuple[str, bytes], ...]:
    """A tiny llama written as real llama.cpp split parts (split.no / split.count / split.tensors.count)."""
    writer = functools.partial(gguf.GGUFWriter, split_max_tensors=max_tensors)
    with mock.patch.object(gguf, "GGUFWriter", writer):
        write_tiny_llama(directory / f"{stem}.gguf", seed=3)
    parts = sorted(directory.glob(f"{stem}-*-of-*.gguf"))
    return tuple((p.name[len(stem) :], p.read_bytes()) for p in parts)


@pytest.fixture(scope="session")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Blobs:
    d = tmp_path_factory.mktemp("hub-blobs")
    return Blobs(
        f32=write_tiny_llama(d / "f32.gguf").read_bytes(),
        q8=write_tiny_llama(d / "q8.gguf", tensor_type="Q8_0", seed=1).read_bytes(),
        f16=write_tiny_llama(d / "f16.gguf", tensor_type="F16", seed=2).read_bytes(),
        other=write_tiny_llama(d / "other.gguf", seed=4).read_bytes(),
        split3=_split(d, "three", 7),
        split2=_split(d, "two", 11),
        alien=write_tiny_llama(d / "alien.gguf", arch="no-such-arch").read_bytes(),
    )


def _repo(repo_id: str, *files: FakeFile, gated: bool = False) -> FakeRepo:
    return FakeRepo(repo_id, {f.path: f for f in files}, gated=gated)


def make_repos(b: Blobs) -> list[FakeRepo]:
    """Fresh repos for one test (tests may change them)."""
    damaged = bytearray(b.f32)
    damaged[-10] ^= 0xFF  # same size, one byte of tensor data changed
    readme = FakeFile("README.md", b"# a model\n", lfs=False)
    return [
        _repo(
            "test/tiny-GGUF",
            FakeFile("tiny-Q4_K_M.gguf", b.f32),
            FakeFile("tiny-Q8_0.gguf", b.q8),
            FakeFile("tiny.gguf", b.other),
            readme,
        ),
        _repo("test/single-GGUF", FakeFile("single-q8_0.gguf", b.q8), readme),
        _repo("test/many-GGUF", FakeFile("many-Q8_0.gguf", b.q8), FakeFile("many-F16.gguf", b.f16)),
        _repo(
            "test/split-GGUF",
            *(FakeFile(f"tiny-split-Q4_K_M{suffix}", data) for suffix, data in b.split3),
            *(FakeFile(f"Q8_0/tiny-split{suffix}", data) for suffix, data in b.split2),
        ),
        _repo(
            "test/vision-GGUF",
            FakeFile("vision-Q4_K_M.gguf", b.f32),
            FakeFile("mmproj-vision-F32.gguf", b.other),
            FakeFile("mmproj-vision-F16.gguf", b.f16),
            FakeFile("LICENSE", b"Apache License 2.0\n", lfs=False),
            FakeFile("LICENSE.md", b"# Terms\n", lfs=False),
            FakeFile("docs/LICENSE", b"not the model's\n", lfs=False),
            readme,
        ),
        _repo("test/corrupt-GGUF", FakeFile("tiny-Q4_K_M.gguf", b.f32, served=bytes(damaged))),
        _repo(
            "test/no-gguf",
            readme,
            FakeFile("config.json", b"{}", lfs=False),
            FakeFile("model.safetensors", b"\0" * 64),
        ),
        _repo("test/gated-GGUF", FakeFile("gated-Q4_K_M.gguf", b.f32), gated=True),
        _repo("test/alien-GGUF", FakeFile("alien-Q4_K_M.gguf", b.alien)),
        _repo("test/truncated-GGUF", FakeFile("truncated-Q4_K_M.gguf", b.f32[: len(b.f32) // 2])),
    ]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Hugging Face home and cache; no token, not offline."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read these at import: point them into the temporary home too.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home / "hub"


def _serve(blobs: Blobs, monkeypatch: pytest.MonkeyPatch, **options: object) -> Iterator[FakeHub]:
    with running_hub(*make_repos(blobs), token=TOKEN, **options) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


@pytest.fixture
def hub(blobs: Blobs, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake hub, with HF_ENDPOINT pointing at it."""
    yield from _serve(blobs, monkeypatch)


@pytest.fixture
def cdn_hub(blobs: Blobs, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake hub sending LFS files through a redirect to another host, as huggingface.co does."""
    yield from _serve(blobs, monkeypatch, redirect_lfs=True)


def _blob(hf_cache: Path, repo: str, data: bytes) -> Path:
    return hf_cache / f"models--{repo.replace('/', '--')}" / "blobs" / sha256_hex(data)


# -- references and file names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf.co/org/repo", HubRef("org/repo")),
        ("hf.co/org/repo:Q4_K_M", HubRef("org/repo", "Q4_K_M")),
        ("org/repo:q8_0", HubRef("org/repo", "q8_0")),
        ("org/repo:latest", HubRef("org/repo")),
        ("huggingface.co/org/repo:Q8_0", HubRef("org/repo", "Q8_0")),
        ("https://huggingface.co/org/repo", HubRef("org/repo")),
        ("org/repo/model-Q4_K_M.gguf", HubRef("org/repo", None, "model-Q4_K_M.gguf")),
        ("hf.co/org/repo/Q8_0/m-00001-of-00002.gguf", HubRef("org/repo", None, "Q8_0/m-00001-of-00002.gguf")),
    ],
)
def test_parse_ref(ref: str, expected: HubRef) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "repo-only",
        "hf.co/org",
        "org/../x",
        "org/repo:bad/tag",
        "org/repo/../../etc/passwd.gguf",
        "org/repo/x.bin",
        "org/re--po",
        "/abs/path",
        "org/repo/a//b.gguf",
        "",
    ],
)
def test_parse_ref_refuses(ref: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_ref(ref)


@pytest.mark.parametrize(
    ("path", "quant"),
    [
        ("Model-7B-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b.Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "q4_k_m"),
        ("Model-Q4_K_M-00001-of-00003.gguf", "Q4_K_M"),
        ("Q4_K_M/Model-00002-of-00003.gguf", "Q4_K_M"),
        ("UD-Q4_K_XL/Model-UD-Q4_K_XL-00001-of-00002.gguf", "UD-Q4_K_XL"),
        ("Model-IQ4_XS.gguf", "IQ4_XS"),
        ("Model-bf16.gguf", "bf16"),
        ("Qwen2-7B-f16.gguf", "f16"),
        ("Qwen2-7B.gguf", None),
    ],
)
def test_quant_of(path: str, quant: str | None) -> None:
    assert quant_of(path) == quant


def _files(*paths: str) -> list[HubFile]:
    return [HubFile(p, 1, "0" * 64) for p in paths]


def test_choose_model_rules() -> None:
    endpoint = "http://hub"
    repo = _files(
        "m-Q8_0.gguf",
        "m-Q4_K_M.gguf",
        "mmproj-m-f16.gguf",
        "m-Q2_K-00001-of-00002.gguf",
        "m-Q2_K-00002-of-00002.gguf",
    )
    models = model_files(repo)
    assert sorted(m.label for m in models) == ["Q2_K", "Q4_K_M", "Q8_0"]  # the projector is no model
    assert choose_model(HubRef("o/r"), models, endpoint).quant == "Q4_K_M"
    assert choose_model(HubRef("o/r", "q8_0"), models, endpoint).quant == "Q8_0"
    split = choose_model(HubRef("o/r", None, "m-Q2_K-00002-of-00002.gguf"), models, endpoint)
    assert [p.path for p in split.parts] == ["m-Q2_K-00001-of-00002.gguf", "m-Q2_K-00002-of-00002.gguf"]
    with pytest.raises(ModelNotFound, match=r"no Q5_K_M GGUF; it has: Q2_K, Q4_K_M, Q8_0"):
        choose_model(HubRef("o/r", "Q5_K_M"), models, endpoint)
    with pytest.raises(ModelNotFound, match="projector"):
        choose_model(HubRef("o/r", None, "mmproj-m-f16.gguf"), models, endpoint)
    only = model_files(_files("only.gguf"))
    assert choose_model(HubRef("o/r"), only, endpoint).parts[0].path == "only.gguf"


# -- pulling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "name", "file"),
    [
        ("hf.co/test/tiny-GGUF", "hf.co/test/tiny-GGUF:Q4_K_M", "tiny-Q4_K_M.gguf"),
        ("hf.co/test/tiny-GGUF:Q8_0", "hf.co/test/tiny-GGUF:Q8_0", "tiny-Q8_0.gguf"),
        ("test/tiny-GGUF:q8_0", "hf.co/test/tiny-GGUF:Q8_0", "tiny-Q8_0.gguf"),
        ("test/tiny-GGUF/tiny-Q8_0.gguf", "hf.co/test/tiny-GGUF:Q8_0", "tiny-Q8_0.gguf"),
        ("huggingface.co/test/tiny-GGUF/tiny.gguf", "hf.co/test/tiny-GGUF:tiny", "tiny.gguf"),
        ("hf.co/test/single-GGUF", "hf.co/test/single-GGUF:q8_0", "single-q8_0.gguf"),
    ],
)
def test_pull_each_form_of_ref(hub: FakeHub, hf_cache: Path, ref: str, name: str, file: str) -> None:
    store = Store()
    entry = pull(store, ref)
    repo = hub.repos[entry.origin["repo"]]
    assert entry.name == name
    assert entry.source == "hf" and entry.owned_files == ()
    assert entry.origin == {
        "repo": repo.repo_id,
        "revision": repo.commit,
        "files": [file],
        "endpoint": hub.url,
    }
    data = repo.files[file].data
    path = Path(entry.path)
    assert path == hf_cache / f"models--{repo.repo_id.replace('/', '--')}" / "snapshots" / repo.commit / file
    assert path.is_symlink() and path.resolve() == _blob(hf_cache, repo.repo_id, data)  # HF's own layout
    assert path.read_bytes() == data
    assert entry.sha256 == sha256_hex(data) and entry.size == len(data) and entry.parts == (entry.path,)
    assert (path.parents[2] / "refs" / "main").read_text() == repo.commit
    assert store.registry.find(name) == entry
    assert Store().resolve(name) == (path, entry)


def test_explicit_quantization_that_does_not_exist_lists_what_does(hub: FakeHub) -> None:
    with pytest.raises(ModelNotFound, match=r"has no Q5_K_M GGUF; it has: Q4_K_M, Q8_0, tiny\.gguf"):
        pull(Store(), "hf.co/test/tiny-GGUF:Q5_K_M")
    assert not hub.log(contains="/resolve/")


def test_no_default_quantization_asks_for_one(hub: FakeHub) -> None:
    with pytest.raises(InvalidParameter, match=r"no Q4_K_M: F16, Q8_0; choose one"):
        pull(Store(), "hf.co/test/many-GGUF")
    assert pull(Store(), "hf.co/test/many-GGUF:f16").name == "hf.co/test/many-GGUF:F16"


def test_split_model_is_fetched_whole_and_runs(hub: FakeHub, blobs: Blobs) -> None:
    entry = pull(Store(), "hf.co/test/split-GGUF:Q4_K_M")
    assert entry.name == "hf.co/test/split-GGUF:Q4_K_M"
    assert [Path(p).name for p in entry.parts] == [f"tiny-split-Q4_K_M{s}" for s, _ in blobs.split3]
    assert [Path(p).read_bytes() for p in entry.parts] == [d for _, d in blobs.split3]
    assert entry.path == entry.parts[0] and entry.size == sum(len(d) for _, d in blobs.split3)
    assert entry.sha256 == sha256_hex(blobs.split3[0][1])
    with candor.load(entry.name) as model:  # llama.cpp finds parts 2 and 3 beside the first
        done = model.generate("hello the world", stream=False, max_tokens=3, temperature=0, ignore_eos=True)
    assert done.usage.completion_tokens == 3


def test_split_model_in_a_folder_named_by_its_quantization(hub: FakeHub, blobs: Blobs) -> None:
    entry = pull(Store(), "test/split-GGUF:q8_0")
    assert entry.name == "hf.co/test/split-GGUF:Q8_0"
    assert entry.origin["files"] == [f"Q8_0/tiny-split{s}" for s, _ in blobs.split2]
    assert len(entry.parts) == 2


def test_projector_and_licences_come_along(hub: FakeHub, blobs: Blobs) -> None:
    entry = pull(Store(), "hf.co/test/vision-GGUF")
    assert entry.mmproj is not None and Path(entry.mmproj).name == "mmproj-vision-F16.gguf"
    assert Path(entry.mmproj).read_bytes() == blobs.f16
    assert [Path(p).name for p in entry.license_files] == ["LICENSE", "LICENSE.md"]  # not docs/LICENSE
    assert Path(entry.license_files[0]).read_text() == "Apache License 2.0\n"
    assert entry.origin["files"] == ["vision-Q4_K_M.gguf", "mmproj-vision-F16.gguf", "LICENSE", "LICENSE.md"]
    assert not hub.log(contains="README.md") and not hub.log(contains="mmproj-vision-F32")


def test_resume_after_the_connection_is_cut(hub: FakeHub, hf_cache: Path, blobs: Blobs) -> None:
    repo, file = "test/tiny-GGUF", "tiny-Q4_K_M.gguf"
    half = len(blobs.f32) // 2
    hub.cut(repo, file, at=half, then_status=500)  # cut half way, then the server fails
    with pytest.raises(DownloadError, match="HTTP 500"):
        pull(Store(), "hf.co/test/tiny-GGUF")
    partial = _blob(hf_cache, repo, blobs.f32).with_name(sha256_hex(blobs.f32) + ".incomplete")
    assert partial.stat().st_size == half  # kept for the next attempt
    assert Store().registry.find("hf.co/test/tiny-GGUF:Q4_K_M") is None

    hub.heal()
    hub.clear_log()
    entry = pull(Store(), "hf.co/test/tiny-GGUF")
    gets = hub.log("GET", f"/resolve/{hub.repos[repo].commit}/{file}")
    assert [g.range for g in gets] == [f"bytes={half}-"]  # only the rest was fetched
    assert Path(entry.path).read_bytes() == blobs.f32
    assert not partial.exists()


def test_a_cut_within_one_pull_resumes_at_once(hub: FakeHub, blobs: Blobs) -> None:
    half = len(blobs.q8) // 2
    hub.cut("test/tiny-GGUF", "tiny-Q8_0.gguf", at=half)
    entry = pull(Store(), "hf.co/test/tiny-GGUF:Q8_0")
    assert [g.range for g in hub.log("GET", "tiny-Q8_0.gguf")] == [None, f"bytes={half}-"]
    assert Path(entry.path).read_bytes() == blobs.q8


def test_content_that_does_not_match_its_published_hash_is_refused(
    hub: FakeHub, hf_cache: Path, blobs: Blobs
) -> None:
    expected = sha256_hex(blobs.f32)
    with pytest.raises(IntegrityError) as caught:
        pull(Store(), "hf.co/test/corrupt-GGUF")
    message = str(caught.value)
    served = hub.repos["test/corrupt-GGUF"].files["tiny-Q4_K_M.gguf"].body
    assert "tiny-Q4_K_M.gguf" in message and f"expected {expected}" in message
    assert f"got {sha256_hex(served)}" in message and "pull again" in message
    assert Store().registry.find("hf.co/test/corrupt-GGUF:Q4_K_M") is None
    with pytest.raises(ModelNotFound):
        Store().resolve("hf.co/test/corrupt-GGUF:Q4_K_M")
    blobs_dir = _blob(hf_cache, "test/corrupt-GGUF", blobs.f32).parent
    assert list(blobs_dir.iterdir()) == []  # removed from the cache, so a retry downloads it again
    snapshot = next((hf_cache / "models--test--corrupt-GGUF" / "snapshots").iterdir())
    assert not (snapshot / "tiny-Q4_K_M.gguf").exists()
    with pytest.raises(IntegrityError):
        pull(Store(), "hf.co/test/corrupt-GGUF")
    assert len(hub.log("GET", "/resolve/")) == 2


def test_a_damaged_file_in_the_cache_is_downloaded_again(hub: FakeHub, blobs: Blobs) -> None:
    entry = pull(Store(), "hf.co/test/tiny-GGUF:Q8_0")
    Store().registry.remove(entry.name)
    blob = Path(entry.path).resolve()
    blob.write_bytes(b"\0" * len(blobs.q8))  # what a size-only check would accept
    again = pull(Store(), "hf.co/test/tiny-GGUF:Q8_0")
    assert Path(again.path).read_bytes() == blobs.q8
    assert len(hub.log("GET", "tiny-Q8_0.gguf")) == 2


def test_a_second_pull_downloads_and_hashes_nothing(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pull(Store(), "hf.co/test/vision-GGUF")
    hub.clear_log()
    hashed: list[Path] = []
    real_hash = candor.identity._hash_file
    monkeypatch.setattr(candor.identity, "_hash_file", lambda p: hashed.append(p) or real_hash(p))
    second = pull(Store(), "hf.co/test/vision-GGUF")
    assert second == first
    assert [r.path for r in hub.log()] == ["/api/models/test/vision-GGUF"]  # the listing, nothing else
    assert hashed == []


def test_progress_reports_each_step(hub: FakeHub, blobs: Blobs) -> None:
    events: list[PullProgress] = []
    pull(Store(), "hf.co/test/tiny-GGUF:Q8_0", progress=events.append)
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256" in statuses and "writing manifest" in statuses
    downloads = [e for e in events if e.status == "downloading tiny-Q8_0.gguf"]
    assert downloads[0].completed == 0 and downloads[-1].completed == len(blobs.q8)
    assert {e.total for e in downloads} == {len(blobs.q8)}
    assert {e.digest for e in downloads} == {f"sha256:{sha256_hex(blobs.q8)}"}
    done = [e.completed or 0 for e in downloads]
    assert done == sorted(done)


def test_repo_without_gguf(hub: FakeHub) -> None:
    with pytest.raises(ModelNotFound, match="has no GGUF model file"):
        pull(Store(), "hf.co/test/no-gguf")


def test_unknown_repo(hub: FakeHub) -> None:
    with pytest.raises(ModelNotFound, match="no model repository 'test/nothing-here'"):
        pull(Store(), "hf.co/test/nothing-here:Q4_K_M")


def test_unreachable_endpoint(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(DownloadError) as caught:
        pull(Store(), "hf.co/test/tiny-GGUF")
    assert f"cannot reach {endpoint} (HF_ENDPOINT)" in str(caught.value)
    assert "proxy" in str(caught.value)


def test_gated_repo_needs_a_token(
    cdn_hub: FakeHub, hf_cache: Path, blobs: Blobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DownloadError, match=r"gated or private: accept its licence .* set HF_TOKEN"):
        pull(Store(), "hf.co/test/gated-GGUF")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cdn_hub.clear_log()
    entry = pull(Store(), "hf.co/test/gated-GGUF")
    assert Path(entry.path).read_bytes() == blobs.f32
    # The hub answers with a redirect to another host ("the CDN"); the token goes to the hub only.
    resolves = cdn_hub.log(contains="/resolve/")
    assert resolves and all(r.authorization == f"Bearer {TOKEN}" for r in resolves)
    cdn = cdn_hub.log("GET", "/cdn/")
    assert cdn and all(r.authorization is None and r.host.startswith("localhost:") for r in cdn)  # type: ignore[union-attr]


def test_an_expired_download_link_is_renewed(cdn_hub: FakeHub, blobs: Blobs) -> None:
    half = len(blobs.q8) // 2
    cdn_hub.cut("test/tiny-GGUF", "tiny-Q8_0.gguf", at=half, then_status=403, then_times=1)
    entry = pull(Store(), "hf.co/test/tiny-GGUF:Q8_0")
    assert Path(entry.path).read_bytes() == blobs.q8
    assert len(cdn_hub.log("HEAD", "tiny-Q8_0.gguf")) == 2  # the second HEAD fetched a fresh link
    assert [r.range for r in cdn_hub.log("GET", "/cdn/")] == [None, f"bytes={half}-", f"bytes={half}-"]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_full_disk_keeps_the_partial_file(hub: FakeHub, hf_cache: Path, blobs: Blobs) -> None:
    limit = 200_000  # the largest file this process may write: the disk is "full" past it
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous_limit[1]))
    try:
        with pytest.raises(DownloadError, match=r"free disk space .* partial file is kept"):
            pull(Store(), "hf.co/test/tiny-GGUF:Q4_K_M")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)
    partial = _blob(hf_cache, "test/tiny-GGUF", blobs.f32).with_name(sha256_hex(blobs.f32) + ".incomplete")
    assert partial.stat().st_size == limit
    hub.clear_log()
    entry = pull(Store(), "hf.co/test/tiny-GGUF:Q4_K_M")
    assert [r.range for r in hub.log("GET", "tiny-Q4_K_M.gguf")] == [f"bytes={limit}-"]
    assert Path(entry.path).read_bytes() == blobs.f32


def test_a_hostile_listing_cannot_write_outside_the_cache(hub: FakeHub, blobs: Blobs) -> None:
    hub.add(_repo("test/evil-GGUF", FakeFile("a/../../../escape-Q4_K_M.gguf", blobs.f32)))
    with pytest.raises(DownloadError, match="cannot be a path in the cache"):
        pull(Store(), "hf.co/test/evil-GGUF")
    hub.add(_repo("test/etag-GGUF", FakeFile("x-Q4_K_M.gguf", blobs.f32, etag_header="../../../x")))
    with pytest.raises(DownloadError, match="no usable ETag"):
        pull(Store(), "hf.co/test/etag-GGUF")
    assert not hub.log("GET", "/resolve/")


def test_llama_cpp_refusal_registers_nothing(hub: FakeHub) -> None:
    with pytest.raises(UnsupportedModel, match=r"llama\.cpp cannot load alien-Q4_K_M\.gguf"):
        pull(Store(), "hf.co/test/alien-GGUF")
    assert Store().registry.entries() == []


def test_malformed_gguf_registers_nothing(hub: FakeHub) -> None:
    with pytest.raises(InvalidModelFile):
        pull(Store(), "hf.co/test/truncated-GGUF")
    assert Store().registry.entries() == []


def test_pulled_model_runs(hub: FakeHub) -> None:
    entry = pull(Store(), "hf.co/test/tiny-GGUF")
    path, found = Store().resolve(entry.name)
    assert found == entry
    with candor.load(path) as model:
        done = model.generate("hello the world", stream=False, max_tokens=3, temperature=0, ignore_eos=True)
    assert done.usage.completion_tokens == 3
    with candor.load(entry.name) as model:
        again = model.generate("hello the world", stream=False, max_tokens=3, temperature=0, ignore_eos=True)
    assert again.text == done.text


# -- the command line ------------------------------------------------------------------------------------


def test_cli_pull_in_process(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    from candor.cli import pull as pull_command

    parser = argparse.ArgumentParser(prog="candor")
    pull_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pull", "hf.co/test/vision-GGUF"])
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "hf.co/test/vision-GGUF:Q4_K_M"
    assert ": llama, 121K parameters" in out and "licence:" in out and "projector:" in out
    assert "pulling manifest" in err and "downloading vision-Q4_K_M.gguf" in err and "success" in err


def test_cli_pull_subprocess(hub: FakeHub, hf_cache: Path, candor_home: Path) -> None:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_cache.parent),
        "HF_HUB_CACHE": str(hf_cache),
        "CANDOR_HOME": str(candor_home),
    }
    done = subprocess.run(
        [sys.executable, "-m", "candor", "pull", "test/tiny-GGUF:Q8_0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "hf.co/test/tiny-GGUF:Q8_0"
    assert "Traceback" not in done.stderr
    assert Store().registry.find("hf.co/test/tiny-GGUF:Q8_0") is not None


def test_cli_pull_draws_progress_bars_on_a_terminal(hub: FakeHub, hf_cache: Path, candor_home: Path) -> None:
    import pexpect

    script = (
        "import argparse, sys\n"
        "from candor.cli import pull\n"
        "parser = argparse.ArgumentParser(prog='candor')\n"
        "pull.register(parser.add_subparsers(dest='command'))\n"
        "args = parser.parse_args(['pull', 'hf.co/test/tiny-GGUF'])\n"
        "sys.exit(args.handler(args))\n"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_cache.parent),
        "HF_HUB_CACHE": str(hf_cache),
        "CANDOR_HOME": str(candor_home),
    }
    child = pexpect.spawn(
        sys.executable, ["-c", script], env=env, encoding="utf-8", dimensions=(30, 120), timeout=120
    )
    child.expect(pexpect.EOF)
    child.close()
    output = child.before or ""
    assert child.exitstatus == 0, output
    assert "━" in output and " kB" in output  # a rich bar with byte counts
    assert "hf.co/test/tiny-GGUF:Q4_K_M" in output
