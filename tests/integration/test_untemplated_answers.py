"""The embedded default model is a base model without a chat template: the README's first command, and the
chat routes of both APIs, answer and stop within the default token limit, and no answer carries a turn
marker or the role word one opens ("...user" glued to the word before: the marker itself shows as nothing)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import free_port, start_server, stop_server

from candor.prompt.fallbacks import UNTEMPLATED_DEFAULTS

MODEL = "gemma-3-270m:Q4_K_M"
LIMIT = int(UNTEMPLATED_DEFAULTS["num_predict"])
PROMPTS = (
    "Why is the sky blue?",  # the README's first command
    "What is the capital of France?",
    "Write a haiku about llamas.",
    "Give me three tips for sleeping better.",
    "Explain what a computer virus is.",
    "How do I boil an egg?",
    "What is 12 times 7?",
    "Tell me a short joke.",
    "Summarize the plot of Romeo and Juliet.",
    "Name three primary colours.",
)
MARKERS = ("<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>")
# A role word at a line's end, glued to what came before it or alone on its line: what follows a turn
# marker that rendered as nothing ("mendatanguser\n"). `the user` at a line's end is English.
ROLE_AT_LINE_END = re.compile(r"(?m)^(.*?)(\S*)(user|model)[ \t]*$")
# English words that end in a role word, so that text which happens to use one is not taken for a leak.
WORDS_ENDING_IN_A_ROLE = frozenset(
    {"abuser", "accuser", "amuser", "bemuser", "confuser", "diffuser", "excuser", "fuser", "infuser"}
    | {"misuser", "peruser", "refuser", "reuser", "superuser", "remodel", "supermodel"}
)
SECONDS_PER_ANSWER = 600  # a shared 2-core machine under load decodes a few tokens a second


def assert_clean(text: str) -> None:
    """No turn marker as text, and no role word a hidden marker opened."""
    for marker in MARKERS:
        assert marker not in text, text
    for match in ROLE_AT_LINE_END.finditer(text):
        line, glued, role = match.groups()
        if glued and not glued[-1].isalpha():
            continue  # "(user", "a-model": punctuation, not a marker's headline
        if not glued and line:
            continue  # a word of its own after a space
        assert (glued + role).lower() in WORDS_ENDING_IN_A_ROLE, (
            f"{role!r} after {glued!r} at a line's end: a turn marker's role word leaked:\n{text}"
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, cpu_selftest_home: Path) -> Path:
    """One CANDOR_HOME for the module's runs (the default model is assembled into it once)."""
    home = tmp_path_factory.mktemp("untemplated-home")
    verdict = cpu_selftest_home / "cache" / "cpu-selftest.json"
    if verdict.exists():
        (home / "cache").mkdir(parents=True)
        shutil.copyfile(verdict, home / "cache" / "cpu-selftest.json")
    return home


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_readme_command_answers_and_stops(home: Path, prompt: str) -> None:
    # As on a fresh machine: no candor server to stream through, so the model loads in the process.
    env = {**os.environ, "CANDOR_HOME": str(home), "CANDOR_HOST": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, "-m", "candor", "run", "--verbose", prompt],
        capture_output=True,
        text=True,
        timeout=SECONDS_PER_ANSWER,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    counted = re.search(r"(?m)^eval count:\s+(\d+) token", result.stderr)
    assert counted is not None, result.stderr
    finish = re.search(r"(?m)^finish reason:\s+(\w+)", result.stderr)
    print(f"{prompt!r}: {counted.group(1)} tokens, finish {finish.group(1) if finish else '?'}")
    assert 0 < int(counted.group(1)) <= LIMIT
    assert result.stdout.strip()
    assert_clean(result.stdout)


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[str]:
    proc, url = start_server(home)
    yield url
    stop_server(proc)


def ndjson(server: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", server + path, json=body, timeout=SECONDS_PER_ANSWER) as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line]


def sse(server: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    with httpx.stream(
        "POST", server + "/v1/chat/completions", json=body, timeout=SECONDS_PER_ANSWER
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line.removeprefix("data: ")))
    return events


QUESTION = [{"role": "user", "content": PROMPTS[0]}]


def test_ollama_chat_answers_stop_within_the_limit(server: str) -> None:
    lines = ndjson(server, "/api/chat", {"model": MODEL, "messages": QUESTION})
    last = lines[-1]
    assert last["done"] and last["done_reason"] in ("stop", "length")
    assert 0 < int(last["eval_count"]) <= LIMIT
    assert_clean("".join(line["message"]["content"] for line in lines))
    whole = httpx.post(
        server + "/api/chat",
        json={"model": MODEL, "messages": QUESTION, "stream": False, "logprobs": True},
        timeout=SECONDS_PER_ANSWER,
    ).json()
    assert 0 < whole["eval_count"] <= LIMIT and len(whole["logprobs"]) == whole["eval_count"]
    assert_clean(whole["message"]["content"])
    once = httpx.post(
        server + "/api/generate",
        json={"model": MODEL, "prompt": PROMPTS[1], "stream": False},
        timeout=SECONDS_PER_ANSWER,
    ).json()
    assert 0 < once["eval_count"] <= LIMIT
    assert_clean(once["response"])


def test_openai_chat_answers_stop_within_the_limit(server: str) -> None:
    events = sse(
        server,
        {"model": MODEL, "messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}},
    )
    usage = events[-1]["usage"]
    assert 0 < usage["completion_tokens"] <= LIMIT
    reasons = [c["finish_reason"] for e in events for c in e["choices"] if c.get("finish_reason")]
    assert reasons in (["stop"], ["length"])
    assert_clean("".join(c["delta"].get("content") or "" for e in events for c in e["choices"]))
    whole = httpx.post(
        server + "/v1/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "logprobs": True},
        timeout=SECONDS_PER_ANSWER,
    ).json()
    assert 0 < whole["usage"]["completion_tokens"] <= LIMIT
    assert_clean(whole["choices"][0]["message"]["content"])


def test_show_lists_the_defaults(server: str) -> None:
    shown = httpx.post(server + "/api/show", json={"model": MODEL}).json()
    assert shown["candor"]["chat_defaults"] == dict(UNTEMPLATED_DEFAULTS)
    lines = shown["parameters"].splitlines()
    assert f"num_predict {LIMIT}" in lines
    assert 'stop "<start_of_turn>"' in lines
