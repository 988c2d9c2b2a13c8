"""Imports point down: cli/ and server/ reach models through the library, never through candor.engine,
llama_cpp or the store's inner modules; and nothing outside candor/engine/ imports llama_cpp."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import candor

PACKAGE = Path(candor.__file__).parent
ROOT = PACKAGE.parent
STORE_FACE = "candor.store.library"


def module_name(path: Path) -> str:
    """The dotted name of a module file under the repository root."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    """Whether a dotted name under candor is a module or package (not a name defined in one)."""
    if dotted.split(".")[0] != "candor":
        return False
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, module: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the source, anywhere in it (functions and TYPE_CHECKING
    blocks too); `from X import Y` counts as importing X.Y when Y is a module."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if _is_module(sub) else base


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_violation(name: str) -> str | None:
    """Why cli/ or server/ may not import `name`, or None when it may."""
    if _within(name, "llama_cpp"):
        return "imports llama_cpp; only candor/engine/ may (go through candor.load or the scheduler)"
    if _within(name, "candor.engine"):
        return f"imports {name}; reach the engine through the library (candor.diagnostics, candor.load)"
    if _within(name, "candor.store") and not _within(name, STORE_FACE):
        return f"imports {name}; use {STORE_FACE} (re-export what it lacks from there)"
    return None


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


def _imports_of(path: Path) -> list[tuple[int, str]]:
    found = imported_modules(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )
    return sorted(set(found))  # `from X import a, b` is one import of X


def test_cli_and_server_import_neither_the_engine_nor_llama_cpp_nor_store_internals() -> None:
    found = []
    for path in _sources("cli", "server"):
        relative = path.relative_to(ROOT).as_posix()
        for line, name in _imports_of(path):
            why = layer_violation(name)
            if why:
                found.append(f"{relative}:{line} {why}")
    assert not found, "\n".join(found)


def test_only_the_engine_imports_llama_cpp() -> None:
    found = [
        f"{path.relative_to(ROOT).as_posix()}:{line} imports {name}; move that call into candor/engine/"
        for path in _sources(".")
        if not path.relative_to(PACKAGE).as_posix().startswith("engine/")
        for line, name in _imports_of(path)
        if _within(name, "llama_cpp")
    ]
    assert not found, "\n".join(found)


def test_the_walk_sees_every_command_and_route_module() -> None:
    cli = {p.relative_to(PACKAGE).as_posix() for p in _sources("cli")}
    server = {p.relative_to(PACKAGE).as_posix() for p in _sources("server")}
    assert {"cli/show.py", "cli/doctor.py", "cli/bench.py", "cli/llama_tools.py"} <= cli
    assert {"server/app.py", "server/ollama/routes.py", "server/openai/routes.py"} <= server


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("import llama_cpp", "candor.cli.x"),
        ("from llama_cpp import llama_batch_init", "candor.cli.x"),
        ("from llama_cpp._ggml import x", "candor.server.x"),
        ("from candor.engine.build_info import build_info", "candor.cli.x"),
        ("from candor.engine import build_info", "candor.cli.x"),
        ("from candor import engine", "candor.cli.x"),
        ("import candor.engine.grammar as grammar", "candor.server.x"),
        ("from ..engine import build_info", "candor.cli.x"),
        ("from candor.store import Store", "candor.cli.x"),
        ("from candor.store.hf import pull", "candor.server.ollama.x"),
        ("from candor import store", "candor.cli.x"),
        ("from ...store.service import Store", "candor.server.ollama.x"),
        ("def f():\n    from candor.store.licenses import readable", "candor.cli.x"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from candor.store.hf import P",
            "candor.cli.x",
        ),
    ],
)
def test_the_check_flags_each_way_of_reaching_below_the_library(source: str, module: str) -> None:
    assert any(layer_violation(name) for _, name in imported_modules(source, module))


@pytest.mark.parametrize(
    "source",
    [
        "from candor.store.library import Library, describe_model",
        "from candor.store import library",
        "import candor.store.library",
        "from candor.scheduler import Scheduler",
        "from candor.diagnostics import build_info",
        "from candor import errors",
        "from . import convert",
        "from candor.identity import ModelCard",
    ],
)
def test_the_check_lets_the_library_through(source: str) -> None:
    assert not [
        name for _, name in imported_modules(source, "candor.server.ollama.x") if layer_violation(name)
    ]
