"""`candor bench`'s runners of llama.cpp's own tools: found by the installed llama-cpp-python's version,
described from their CMake cache, and a tool killed by a signal is an error that says what to do."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from candor.cli.llama_tools import ToolCrashed, _run_tool, find_llama_tools, tools_build


def _fake_tool(folder: Path) -> Path:
    folder.mkdir(parents=True)
    tool = folder / "llama-bench"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    return tool


def test_the_tools_built_at_the_installed_version_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no llama-bench on PATH
    monkeypatch.setenv("CANDOR_REF_DIR", str(tmp_path))
    version = importlib.metadata.version("llama-cpp-python")
    assert find_llama_tools() is None
    _fake_tool(tmp_path / "llama-cpp-python-0.0.0" / "build" / "bin")  # another version's: not these
    assert find_llama_tools() is None
    flagged = _fake_tool(tmp_path / f"llama-cpp-python-{version}-abc123" / "build" / "bin")
    assert find_llama_tools() == flagged.parent
    default = _fake_tool(tmp_path / f"llama-cpp-python-{version}" / "build" / "bin")
    assert find_llama_tools() == default.parent  # the default build before those with other flags
    explicit = _fake_tool(tmp_path / "mine")
    assert find_llama_tools(str(explicit.parent)) == explicit.parent


def test_a_tools_build_is_read_from_its_cmake_cache(tmp_path: Path) -> None:
    tools = tmp_path / "build" / "bin"
    tools.mkdir(parents=True)
    assert "build flags unknown" in tools_build(tools)
    cache = tmp_path / "build" / "CMakeCache.txt"
    cache.write_text("GGML_NATIVE:BOOL=ON\n")
    assert "GGML_NATIVE" in tools_build(tools)
    cache.write_text("GGML_NATIVE:BOOL=OFF\nGGML_AVX2:BOOL=ON\nGGML_FMA:BOOL=ON\n")
    assert tools_build(tools).endswith("(GGML_NATIVE=OFF, AVX2 FMA: without AMX)")


def test_a_tool_killed_by_a_signal_says_how_to_run_it() -> None:
    with pytest.raises(ToolCrashed, match=r"SIGKILL.*without AMX"):
        _run_tool(["/bin/sh", "-c", "kill -9 $$"], None)
    with pytest.raises(subprocess.CalledProcessError):
        _run_tool(["/bin/sh", "-c", "exit 3"], None)
    assert _run_tool(["/bin/sh", "-c", "echo ok"], None) == "ok\n"


def test_finding_the_tools_does_not_load_llama_cpp() -> None:
    probe = (
        "import sys\n"
        "from candor.cli.llama_tools import find_llama_tools\n"
        "find_llama_tools()\n"
        "print('llama_cpp' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
