"""The command line imports only what the command it runs needs: `candor --version` and `candor ps` load
neither llama.cpp nor the Hugging Face client, and every command is still reachable by name or alias."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from candor.cli import COMMANDS, build_parser

PROBE = """
import sys
from candor.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = [m for m in ("llama_cpp", "huggingface_hub", "fastapi", "numpy") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def heavy_modules(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    line = [x for x in done.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("--help",),
        ("ps", "--help"),
        ("stop", "--help"),
        ("serve", "--help"),
        ("run", "--help"),
    ],
)
def test_commands_that_run_no_model_load_neither_llama_cpp_nor_the_hub_client(args: tuple[str, ...]) -> None:
    assert heavy_modules(*args) == []


def test_every_command_and_alias_is_registered_by_its_module() -> None:
    full = build_parser()
    choices = full._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(choices) == set(COMMANDS)  # the table names every command and alias there is
    for command, module in COMMANDS.items():
        alone = build_parser([module])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert command in alone


def test_the_engine_package_names_what_it_lists_whatever_was_imported_first() -> None:
    # A lazy name that is also a submodule's would turn into that module once the submodule is loaded.
    probe = (
        "import importlib, pkgutil, types, candor.engine as e\n"
        "for m in pkgutil.iter_modules(e.__path__): importlib.import_module('candor.engine.' + m.name)\n"
        "print([n for n in e.__all__ if isinstance(getattr(e, n), types.ModuleType)])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("debug", "expected"), [("", "warning: boom"), ("1", "candor.somewhere: boom")])
def test_a_command_says_warnings_as_a_user_reads_them(debug: str, expected: str) -> None:
    probe = (
        "import logging, sys\n"
        "from candor.cli import main\n"
        "main(['licenses'])\n"
        "logging.getLogger('candor.somewhere').warning('boom')\n"
    )
    env = {**os.environ, "CANDOR_DEBUG": debug}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert done.stderr.strip().splitlines()[-1] == expected


def loads_llama_cpp(code: str, env: dict[str, str] | None = None) -> bool:
    probe = code + "\nimport sys\nprint('LOADED=' + str('llama_cpp' in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return [x for x in done.stdout.splitlines() if x.startswith("LOADED=")][-1] == "LOADED=True"


def test_importing_candor_and_running_ps_leave_llama_cpp_unloaded() -> None:
    assert not loads_llama_cpp("import candor\nfrom candor import SamplingParams, Message, errors")
    # `candor ps` against a port where nothing listens: it fails, and still never loads llama.cpp
    closed = {"CANDOR_HOST": "127.0.0.1:9"}
    assert not loads_llama_cpp(
        "from candor.cli import main\ntry:\n    main(['ps'])\nexcept SystemExit:\n    pass", closed
    )
    # the server's own process: runners load llama.cpp, the server never does
    assert not loads_llama_cpp("from candor.server.app import create_app\ncreate_app()")
    assert loads_llama_cpp("import candor\ncandor.Model")  # the probe sees it when it is loaded
