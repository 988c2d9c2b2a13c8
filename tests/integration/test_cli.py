"""The `candor` command as a user runs it: real processes, the real default model, a real terminal."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import httpx
import pexpect
import pytest
from live_server import free_port, start_server, stop_server
from near_tie import Greedy, assert_text_same_up_to_a_near_tie
from test_server import MODEL

import candor

CANDOR = [sys.executable, "-m", "candor"]


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CANDOR, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else os.environ.copy(),
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def served(url: str, path: str, num_predict: int, **body: object) -> Greedy:
    """A candor server's greedy answer on its Ollama API, with the likeliest tokens at each step (read as
    JSON, which keeps each token's bytes)."""
    options = {"temperature": 0, "num_predict": num_predict}
    extra = {"stream": False, "logprobs": True, "top_logprobs": 20, "options": options}
    answer = httpx.post(url + path, json={"model": MODEL, **body, **extra}, timeout=120).json()
    reply = answer["message"]["content"] if "message" in answer else answer["response"]
    return Greedy.of_api(answer["logprobs"], ended=answer["done_reason"] == "stop", text=reply)


def test_run_streams_an_answer_and_discloses_the_fallback(default_model_path: Path) -> None:
    result = run_cli(
        "run", str(default_model_path), "Name a colour.", "--temperature", "0", "--max-tokens", "12"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "fallback chat format 'gemma'" in result.stderr
    again = run_cli(
        "run", str(default_model_path), "Name a colour.", "--temperature", "0", "--max-tokens", "12"
    )
    assert again.stdout == result.stdout  # greedy is deterministic


def test_run_with_piped_stdin_and_raw_and_verbose(default_model_path: Path, gemma: candor.Model) -> None:
    result = run_cli(
        "run",
        str(default_model_path),
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--verbose",
        stdin="The capital of France is",
    )
    assert result.returncode == 0, result.stderr
    # Another process, context size and thread count: the same answer up to a near-tie.
    expected = gemma.generate(
        "The capital of France is", stream=False, temperature=0, max_tokens=8, logprobs=20
    )
    assert result.stdout.endswith("\n")
    assert_text_same_up_to_a_near_tie(
        result.stdout,
        Greedy.of(
            expected.logprobs, ended=expected.finish_reason is candor.FinishReason.STOP, text=expected.text
        ),
    )
    assert "fallback" not in result.stderr  # --raw uses no chat format at all
    for line in ("load duration:", "prompt eval rate:", "eval count:           8 token(s)", "eval rate:"):
        assert line in result.stderr


def test_run_without_model_uses_the_default_and_a_spaced_first_word_is_the_prompt() -> None:
    result = run_cli("run", "Say hello.", "--max-tokens", "4", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize(
    "args, message",
    [
        (("run", "/no/such/model.gguf", "hi"), "no file at /no/such/model.gguf"),
        (("run", "nosuchmodel:7b", "hi"), "no model named 'nosuchmodel:7b'"),
        (("run", "hi there", "--temperature", "-1"), "temperature must be between"),
        (("run", "hi there", "--ctx", "0"), "ctx must be"),
        (("show", "/no/such/model.gguf"), "no file at"),
    ],
)
def test_bad_input_is_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    no_traceback(result)


def test_a_corrupt_model_file_is_a_clear_error(tmp_path: Path, default_model_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with default_model_path.open("rb") as src:
        cut.write_bytes(src.read(5_000_000))
    for command in ("run", "show"):
        result = run_cli(command, str(cut), *(["hi there"] if command == "run" else []))
        assert result.returncode == 1
        assert "Error: " in result.stderr and str(cut) in result.stderr
        no_traceback(result)


def test_show_json_reports_identity_from_metadata(default_model_path: Path) -> None:
    result = run_cli("show", str(default_model_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["architecture"] == "gemma3"
    assert data["parameter_count"] == 268_098_176
    assert data["file_type"] == "Q4_K_M"
    assert data["tensor_types"]["Q4_K"] > 0
    assert data["context_length"] == 32768 and data["embedding_length"] == 640 and data["block_count"] == 18
    assert data["vocab_size"] == 262_144 and data["tokenizer_model"] == "llama"
    assert data["license"] == "gemma"
    assert data["chat_template"] is None
    assert data["chat_format"]["fallback"] is True and data["chat_format"]["name"] == "gemma"
    assert data["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert data["is_finetune"] is False


def test_show_default_points_at_gemmas_terms() -> None:
    result = run_cli("show")
    assert result.returncode == 0, result.stderr
    assert "base model, not a finetune" in result.stdout
    terms = next(line for line in result.stdout.splitlines() if "full text" in line).split()[-1]
    assert "Gemma Terms of Use" in Path(terms).read_text(encoding="utf-8")


def test_doctor_reports_the_llama_cpp_build() -> None:
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["llama_cpp_python"] == "0.3.36"
    assert data["llama_cpp_commit"] and data["llama_cpp_commit"] != "unknown"
    assert "CPU" in data["backends"]
    assert any(s["env"] == "CANDOR_CTX" for s in data["settings"])
    assert data["load_mode"] == "auto"
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[madvise]" in thp.read_text():  # this machine: glibc 2.36 asks for them
        assert data["huge_pages"].startswith("yes (system mode 'madvise'")
    human = run_cli("doctor")
    assert "llama.cpp build" in human.stdout and "CANDOR_THREADS" in human.stdout
    assert "CANDOR_LOAD_MODE" in human.stdout


def test_version_and_help_with_examples() -> None:
    assert run_cli("--version").stdout.startswith("candor ")
    for command in ("run", "show", "doctor"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "example" in result.stdout


def test_interactive_chat_in_a_terminal(default_model_path: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "candor", "run", str(default_model_path)],
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "TERM": "dumb"},
        dimensions=(40, 200),
        # A test run started in the background by a non-interactive shell ignores SIGINT, and a child
        # inherits that (Python then installs no Ctrl-C handler): give the chat the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        child.expect(">>> ")
        child.sendline("/set parameter temperature 0")
        child.expect("Set parameter 'temperature' to '0'")
        child.sendline("/set parameter num_predict 12")
        child.expect("Set parameter 'num_predict'")
        child.sendline("/set parameter top_k -3")
        child.expect("Could not set top_k")
        child.sendline("/set system You are terse.")
        child.expect("Set system message.")
        child.sendline("/show parameters")
        child.expect(r"repeat_penalty\s+1\.1")  # the default model has no chat template: Ollama's penalty
        child.expect(r"num_predict\s+12")
        child.sendline("/show system")
        child.expect("You are terse.")
        child.sendline("/show info")
        child.expect("gemma3")
        child.expect("answer defaults: num_predict 256, repeat_penalty 1.1, repeat_last_n 64")
        child.sendline("Name a colour.")
        child.expect(">>> ")
        child.sendline("/clear")
        child.expect("Cleared session context")
        # Ctrl-C stops a long answer and leaves the chat running.
        child.sendline("/set parameter num_predict 4000")
        child.expect("Set parameter")
        child.sendline("Write a very long story about a lighthouse.")
        child.expect("lighthouse.\r\n")  # the terminal's echo of the line
        child.expect(r"\S")  # the answer's first chunk, whatever its words: it is streaming
        # A story of up to 4000 tokens would have to end within a token or two to miss this Ctrl-C.
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect(">>> ")
        child.sendline("/set parameter num_predict 12")
        child.expect("Set parameter")
        child.sendline('"""Two')
        child.sendline('lines"""')
        child.expect(">>> ")
        child.sendline("/bogus")
        child.expect("Unknown command")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")


def test_show_license_in_the_chat_is_what_candor_licenses_prints(tmp_path: Path) -> None:
    # Nobody listens at CANDOR_HOST: the chat loads the default model in this process.
    env = {**os.environ, "CANDOR_HOST": f"127.0.0.1:{free_port()}", "TERM": "dumb"}
    printed = run_cli("licenses", MODEL, env=env)
    assert printed.returncode == 0 and "Gemma Terms of Use" in printed.stdout
    child = pexpect.spawn(
        sys.executable, ["-m", "candor", "run"], encoding="utf-8", timeout=120, env=env, dimensions=(40, 200)
    )
    try:
        child.expect(">>> ")
        child.sendline("/show license")
        child.expect(">>> ")
        echo, _, shown = (child.before or "").replace("\r\n", "\n").partition("\n")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert echo.endswith("/show license")
    whole = printed.stdout.strip()
    assert whole.splitlines()[0] == MODEL and "license (from the file's metadata): gemma" in whole
    assert "GEMMA_TERMS.html =====" in whole and "4.9 No Waiver" in whole and "Send feedback" not in whole
    assert shown.strip() == whole  # what `candor licenses MODEL` prints, line for line
    assert child.exitstatus == 0


def test_ctrl_d_leaves_the_chat(default_model_path: Path) -> None:
    child = pexpect.spawn(
        sys.executable, ["-m", "candor", "run", str(default_model_path)], encoding="utf-8", timeout=60
    )
    child.expect(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_run_goes_through_a_running_candor_server(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path / "serve-home")
    env = {**os.environ, "CANDOR_HOST": url.removeprefix("http://")}
    try:
        before = metric(url, "candor_requests_total")
        flags = ("--temperature", "0", "--max-tokens", "12")
        result = run_cli("run", "Name a colour.", *flags, env=env)
        assert result.returncode == 0, result.stderr
        assert metric(url, "candor_requests_total") == before + 1  # answered by the server
        assert "fallback chat format 'gemma'" in result.stderr
        # Asked again, the server reuses the KV of all but the prompt's last token, computed in another
        # batch shape: the answers agree up to a near-tie, as the one in-process does.
        direct = served(url, "/api/chat", 12, messages=[{"role": "user", "content": "Name a colour."}])
        assert result.stdout.endswith("\n")
        assert_text_same_up_to_a_near_tie(result.stdout, direct)
        local = run_cli("run", "Name a colour.", *flags, "--local", env=env)
        assert local.returncode == 0
        assert_text_same_up_to_a_near_tie(local.stdout, direct)  # the same answer in-process
        assert metric(url, "candor_requests_total") == before + 2  # only the direct call added one

        raw = run_cli(
            "run",
            MODEL,
            "--raw",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--verbose",
            stdin="The capital of France is",
            env=env,
        )
        assert raw.returncode == 0, raw.stderr
        expected = served(url, "/api/generate", 8, prompt="The capital of France is", raw=True)
        assert raw.stdout.endswith("\n")
        assert_text_same_up_to_a_near_tie(raw.stdout, expected)
        assert "eval count:           8 token(s)" in raw.stderr and "fallback" not in raw.stderr
        assert metric(url, "candor_requests_total") == before + 4

        missing = run_cli("run", "nosuchmodel:7b", "hi", env=env)
        assert missing.returncode == 1 and "no model named 'nosuchmodel:7b'" in missing.stderr
        no_traceback(missing)
        bad = run_cli("run", "hi there", "--top-k", "-3", env=env)
        assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "top_k" in bad.stderr
    finally:
        stop_server(proc)


def test_the_interactive_chat_goes_through_a_running_candor_server(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path / "serve-home")
    env = {**os.environ, "CANDOR_HOST": url.removeprefix("http://"), "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "candor", "run"],
        encoding="utf-8",
        timeout=60,
        env=env,
        dimensions=(40, 200),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # see the in-process chat test
    )
    try:
        child.expect("on the candor server at " + url)
        child.expect(">>> ")
        before = metric(url, "candor_requests_total")
        child.sendline("/set parameter temperature 0")
        child.expect("Set parameter")
        child.sendline("/set parameter num_predict 12")
        child.expect("Set parameter")
        child.sendline("Name a colour.")
        child.expect("colour.\r\n")  # the terminal's echo of the line
        child.expect(">>> ")  # the answer's end
        answer = (child.before or "").replace("\r\n", "\n")
        assert metric(url, "candor_requests_total") == before + 1  # answered by the server
        # Asked again, the server reuses the prompt's KV: the same answer up to a near-tie.
        direct = served(url, "/api/chat", 12, messages=[{"role": "user", "content": "Name a colour."}])
        assert_text_same_up_to_a_near_tie(answer, direct)
        child.sendline("/show info")
        child.expect("served by the candor server at")
        child.expect(">>> ")
        child.sendline("/show license")  # as `candor licenses MODEL` shows it
        child.expect("license \\(from the file's metadata\\): gemma")
        child.expect("GEMMA_TERMS.html =====")
        child.expect("Gemma Terms of Use")
        child.expect(">>> ")
        assert "Send feedback" not in (child.before or "")
        # Ctrl-C hangs up, which cancels the generation on the server.
        cancelled = metric(url, "candor_requests_cancelled_total")
        # Afresh: after the first answer a story may only repeat it (on the AVX2 build 蓝色的, endlessly).
        child.sendline("/clear")
        child.expect("Cleared session context")
        child.sendline("/set parameter num_predict 4000")
        child.expect("Set parameter")
        child.sendline("Write a very long story about a lighthouse.")
        child.expect("lighthouse.\r\n")
        child.expect(r"\S")  # the answer's first chunk: it is streaming
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect(">>> ")
        deadline = time.monotonic() + 10
        while metric(url, "candor_requests_cancelled_total") == cancelled and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(url, "candor_requests_cancelled_total") == cancelled + 1
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
        stop_server(proc)
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")


class _OllamaLike(http.server.BaseHTTPRequestHandler):
    """Answers /api/version as an Ollama does (no candor marker) and records every other request."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = json.dumps({"version": "0.12.0"}).encode() if self.path == "/api/version" else b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_run_never_mistakes_an_ollama_for_a_candor_server() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OllamaLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "CANDOR_HOST": f"127.0.0.1:{server.server_address[1]}"}
        result = run_cli("run", "Say hello.", "--max-tokens", "4", "--seed", "1", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()  # answered in-process
        assert _OllamaLike.seen == ["/api/version"]  # asked who it is, sent it nothing else
    finally:
        server.shutdown()
        server.server_close()
