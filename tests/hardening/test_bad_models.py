"""Every malformed GGUF of the corpus (bad_gguf.py) through the library, the CLI and a real `candor serve`.

Each must end in a typed candor error with a message that says what to do (a sandboxed template
error for hostile chat templates), the server must keep answering, and no child process may be left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bad_gguf import CASES, HARMLESS, Case, write_corpus
from gguf_layout import Base
from live_server import start_server, stop_server

import candor
from candor.cli.show import describe
from candor.config import Settings
from candor.errors import CandorError, InvalidModelFile, ModelLoadError, TemplateError
from candor.preflight import preflight
from candor.store import Store

BY_NAME = {case.name: case for case in CASES}
# The CLI paths for one case of each kind (process start-up costs ~1 s per command).
CLI_CASES = (
    "four_byte_file",
    "n_kv_near_2_63",
    "offset_past_eof",
    "block_count_513",
    "type_keeps_size",
    "missing_tensor",
    "template_cycler_globals",
)
CHAT = [{"role": "user", "content": "hello"}]
RENDER_SECONDS = 5.0  # a hostile template is stopped after 1 s of rendering; leave room for a slow CI


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc, so no helper library decides what counts)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base.make(tmp_path_factory.mktemp("bad-gguf-base"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, base: Base) -> dict[str, Path]:
    return {case.name: path for case, path in write_corpus(tmp_path_factory.mktemp("bad-gguf"), base=base)}


def test_corpus_covers_the_classes() -> None:
    assert len(CASES) >= 40 and len(BY_NAME) == len(CASES)
    stages = {case.stage for case in CASES}
    assert stages == {"preflight", "llama.cpp", "template"}
    assert all(case.breaks for case in CASES)


# --- the library: candor.load, the store's import and the `show` data, for every case --------------


def _check_message(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert isinstance(exc, CandorError) and text and "Traceback" not in text
    assert path.name in text or "template" in text, text


@pytest.mark.parametrize("name", [c.name for c in CASES if c.stage == "preflight"])
def test_preflight_refuses_before_llama_cpp(name: str, corpus: dict[str, Path]) -> None:
    case, path = BY_NAME[name], corpus[name]
    for attempt in (
        lambda: preflight(path),
        lambda: describe(str(path)),
        lambda: candor.load(path, ctx=64, threads=1),
        lambda: candor.import_model(path, name="bad"),
    ):
        with pytest.raises(case.error) as caught:
            attempt()
        _check_message(caught.value, path)
    assert Store().find("bad") is None  # nothing was registered


@pytest.mark.parametrize("name", [c.name for c in CASES if c.stage == "llama.cpp"])
def test_llama_cpp_refuses_cleanly(name: str, corpus: dict[str, Path]) -> None:
    case, path = BY_NAME[name], corpus[name]
    preflight(path)  # well-formed GGUF: candor's own checks pass it on
    assert describe(str(path))["path"] == str(path)  # `show` reads only the header, which is sound
    # The import test-loads in a child; a crash there would take this process down in candor.load.
    with pytest.raises(CandorError, match=r"llama\.cpp cannot load") as refused:
        candor.import_model(path, name="bad")
    assert "crashed" not in str(refused.value) and "did not finish" not in str(refused.value)
    with pytest.raises(case.error) as caught:
        candor.load(path, ctx=64, threads=1)
    _check_message(caught.value, path)


def test_import_refused_by_llama_cpp_is_a_model_load_error(corpus: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError):
        candor.import_model(corpus["missing_tensor"], name="bad")


@pytest.mark.parametrize("name", [c.name for c in CASES if c.stage == "template"])
def test_hostile_templates_are_stopped(name: str, corpus: dict[str, Path]) -> None:
    path = corpus[name]
    assert describe(str(path))["chat_format"]["source"] == "model"
    with candor.load(path, ctx=64, threads=1) as model:
        started = time.monotonic()
        with pytest.raises(TemplateError, match="--raw") as caught:
            model.chat(CHAT, stream=False, max_tokens=2)
        assert time.monotonic() - started < RENDER_SECONDS
        _check_message(caught.value, path)
        done = model.generate("hello the world", stream=False, max_tokens=2, temperature=0)
        assert done.usage.completion_tokens == 2  # the model still works without its template
    if name == "template_cycler_globals":  # a well-formed file: the store imports it
        assert candor.import_model(path, name="hostile").name == "hostile:latest"


def test_every_section_boundary_cut_is_refused(base: Base, tmp_path: Path) -> None:
    cuts = sorted({end + d for _, end in base.layout.boundaries()[:-1] for d in (-1, 0, 1)})
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.gguf"
        path.write_bytes(base.raw[:cut])
        with pytest.raises(InvalidModelFile, match=path.name):
            preflight(path)
    assert len(cuts) > 3 * 40  # header, every metadata entry and tensor entry, padding


@pytest.mark.parametrize("name", sorted(HARMLESS))
def test_harmless_changes_still_load(name: str, base: Base, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(HARMLESS[name](base))
    preflight(path)
    with candor.load(path, ctx=64, threads=1) as model:
        assert model.generate("hello", stream=False, max_tokens=2, temperature=0).usage.completion_tokens == 2


def test_no_child_process_is_left(corpus: dict[str, Path]) -> None:
    # Runs after the library tests above (pytest keeps file order): every probe child must be gone.
    assert descendants(os.getpid()) == set()


# --- the CLI: `candor show` and `candor run` as subprocesses ----------------------------------------


def _candor(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CANDOR_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "candor", *args], capture_output=True, text=True, timeout=120, env=env
    )


def _assert_cli_error(done: subprocess.CompletedProcess[str], case: Case) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # not a signal, not a traceback
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_show_and_run(name: str, corpus: dict[str, Path], candor_home: Path) -> None:
    case, path = BY_NAME[name], corpus[name]
    shown = _candor("show", str(path), home=candor_home)
    ran = _candor("run", str(path), "hello", "--max-tokens", "2", home=candor_home)
    if case.stage == "preflight":
        _assert_cli_error(shown, case)
    else:
        assert shown.returncode == 0 and str(path) in shown.stdout, shown.stderr[-2000:]
    _assert_cli_error(ran, case)
    if case.stage == "template":
        assert "--raw" in ran.stderr
        raw = _candor("run", str(path), "hello the world", "--raw", "--max-tokens", "2", home=candor_home)
        assert raw.returncode == 0, raw.stderr[-2000:]


# --- a real server: one session walks every case --------------------------------------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path], base: Base
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A server whose store names every case: imported while sound, then the file replaced on disk."""
    home = tmp_path_factory.mktemp("serve-bad-home")
    files = tmp_path_factory.mktemp("serve-bad-files")
    good = files / "good.gguf"
    good.write_bytes(base.raw)
    imported = _candor("import", str(good), "--name", "good", home=home)
    assert imported.returncode == 0, imported.stderr
    refused = _candor("import", str(corpus["block_count_513"]), "--name", "bad", home=home)
    assert refused.returncode == 1 and refused.stderr.startswith("Error: "), refused.stderr
    store = Store(Settings.from_env({"CANDOR_HOME": str(home)}))
    for case in CASES:
        file = files / f"{case.name}.gguf"
        shutil.copyfile(good, file)
        store.import_file(file, name=case.name.replace("_", "-"), probe=False)
        shutil.copyfile(corpus[case.name], file)  # the file changes after import (damage, re-download)
    proc, url = start_server(home)
    yield proc, url
    stop_server(proc)


def _error_status(response: httpx.Response, stage: str, what: str) -> None:
    body = response.json()  # a JSON body, never a dropped connection or an HTML page
    assert "error" in body, (what, response.status_code, body)
    if stage == "preflight" or stage == "template":
        assert 400 <= response.status_code < 500, (what, response.status_code, body)
    else:  # llama.cpp refused a file it was handed: the server's load failed, cleanly
        assert response.status_code in (422, 500), (what, response.status_code, body)


def test_server_walks_the_corpus(served: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, url = served
    timings: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for case in CASES:
            model = case.name.replace("_", "-")
            started = time.monotonic()
            shown = http.post("/api/show", json={"model": model})
            if case.stage == "preflight":
                _error_status(shown, case.stage, f"{case.name}: /api/show")
            else:
                assert shown.status_code == 200, (case.name, shown.text[:500])
            chat = http.post(
                "/v1/chat/completions",
                json={"model": model, "messages": CHAT, "max_tokens": 2},
            )
            _error_status(chat, case.stage, f"{case.name}: /v1/chat/completions")
            generated = http.post(  # keep_alive 0: a template case's model is unloaded after this
                "/api/generate",
                json={"model": model, "prompt": "hi", "stream": False, "keep_alive": 0},
            )
            _error_status(generated, case.stage, f"{case.name}: /api/generate")
            timings[case.stage] = timings.get(case.stage, 0.0) + time.monotonic() - started
            assert http.get("/").status_code == 200, case.name  # still answering
        good = http.post(
            "/api/generate",
            json={"model": "good", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
        )
        assert good.status_code == 200 and good.json()["eval_count"] == 2, good.text[:500]
        loaded = {m["name"] for m in http.get("/api/ps").json()["models"]}
    assert proc.poll() is None
    # keep_alive 0 does not unload a model whose request failed before reaching its runner (see the
    # report on Scheduler.load), so the last hostile-template model may still be loaded beside `good`.
    templates = {c.name.replace("_", "-") + ":latest" for c in CASES if c.stage == "template"}
    assert "good:latest" in loaded and loaded <= {"good:latest"} | templates, loaded
    runners = descendants(proc.pid)
    assert len(runners) == len(loaded), [Path(f"/proc/{p}/cmdline").read_bytes() for p in runners]
    assert descendants(os.getpid()) == {proc.pid} | runners
    print(json.dumps({"cases": len(CASES), "seconds_by_stage": timings, "runners_left": len(runners)}))
