"""A command's flags may come anywhere among its words (the README's `candor run ./model.gguf
--temperature 0 --max-tokens 64 "2+2="`), and a usage error shows that command's usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from candor.cli import build_parser

ORDERS = [
    ["MODEL", "--temperature", "0", "--max-tokens", "4", "2+2="],
    ["--temperature", "0", "MODEL", "--max-tokens", "4", "2+2="],
    ["MODEL", "2+2=", "--temperature", "0", "--max-tokens", "4"],
    ["--temperature", "0", "--max-tokens", "4", "MODEL", "2+2="],
    ["MODEL", "--temperature=0", "2+2=", "--max-tokens=4"],
]


def candor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "candor", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.mark.parametrize("order", ORDERS)
def test_flags_parse_anywhere_among_run_words(order: list[str]) -> None:
    words = [w.replace("MODEL", "./m.gguf") for w in order]
    args = build_parser(["run"]).parse_args(["run", *words])
    assert (args.words, args.temperature, args.max_tokens) == (["./m.gguf", "2+2="], 0.0, 4)


def test_a_double_dash_still_ends_the_flags() -> None:
    args = build_parser(["run"]).parse_args(["run", "--seed", "1", "--", "-5 apples"])
    assert (args.words, args.seed) == (["-5 apples"], 1)


@pytest.mark.parametrize("order", [ORDERS[0], ORDERS[2]])
def test_the_readme_example_answers_with_flags_between_model_and_prompt(
    order: list[str], tiny_model_path: Path
) -> None:
    done = candor("run", *[w.replace("MODEL", str(tiny_model_path)) for w in order])
    assert "usage:" not in done.stderr
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["run", "--bogus", "hi"], "unrecognized arguments: --bogus"),
        (["run", "./m.gguf", "--temperature", "warm", "hi"], "argument --temperature: invalid float value"),
        (["ps", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_usage_error_shows_the_command_s_own_usage(args: list[str], complaint: str) -> None:
    done = candor(*args)
    command = args[0]
    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: candor {command} ")
    assert f"candor {command}: error: {complaint}" in done.stderr
