"""`candor doctor`: which llama.cpp build runs, with which backends, and where candor keeps things."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from typing import Any, TextIO

from candor import __version__
from candor.config import Settings, describe
from candor.diagnostics import amx_free_build, build_info, cpu_buffers, cpu_name
from candor.plan import huge_pages_status

EXAMPLE = "example: candor doctor --json"


def register(sub: Any) -> None:
    """Add the `doctor` command."""
    parser = sub.add_parser(
        "doctor", help="show the llama.cpp build, backends and settings", description=__doc__, epilog=EXAMPLE
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.set_defaults(handler=handle)


def report() -> dict[str, Any]:
    """Collect everything doctor shows."""
    info = build_info()
    settings = Settings.from_env()
    buffers = cpu_buffers(settings, threads=settings.threads)
    verdict = buffers.verdict
    return {
        "candor": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llama_cpp_python": info.llama_cpp_python,
        "llama_cpp_commit": info.llama_cpp_commit,
        "ggml_version": info.ggml_version,
        "backends": list(info.backends),
        "devices": list(info.devices),
        "gpu_offload": info.gpu_offload,
        "cpu": cpu_name(),
        "cpu_features": list(info.cpu_features),
        "cpu_buffers": {
            "setting": settings.cpu_buffers,
            "extra_buffer_types": buffers.extra,
            "why": buffers.why,
            "selftest": verdict.to_json() if verdict is not None else None,
            "amx_free_build": amx_free_build(buffers),
        },
        "threads": settings.threads,
        "huge_pages": huge_pages_status(),
        "load_mode": settings.load_mode,
        "home": str(settings.home),
        "settings": [dataclasses.asdict(row) for row in describe()],
    }


def handle(args: argparse.Namespace) -> int:
    """Print the report."""
    data = report()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    out = sys.stdout
    cpu = data["cpu_buffers"]
    gpu = "yes" if data["gpu_offload"] else "no (CPU only; see the README to build a GPU backend)"
    rows = [
        ("candor", data["candor"]),
        ("python", f"{data['python']} on {data['platform']}"),
        ("llama-cpp-python", data["llama_cpp_python"]),
        ("llama.cpp build", f"commit {data['llama_cpp_commit']} (ggml {data['ggml_version']})"),
        ("backends", ", ".join(data["backends"])),
        ("devices", ", ".join(data["devices"])),
        ("GPU offload", gpu),
        ("CPU", data["cpu"]),
        ("CPU features", " ".join(data["cpu_features"]) or "none reported"),
        ("CPU buffers", f"{data['cpu_buffers']['why']} (CANDOR_CPU_BUFFERS={cpu['setting']})"),
        ("threads", f"{data['threads']} (CANDOR_THREADS)"),
        ("weights", f"{data['load_mode']} (CANDOR_LOAD_MODE); huge pages: {data['huge_pages']}"),
        ("candor home", f"{data['home']} (CANDOR_HOME: store, caches, settings)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=out)
    if data["cpu_buffers"]["amx_free_build"]:
        print(
            "\nThis CPU advertises AMX but cannot run llama.cpp's AMX kernels; candor loads models without "
            "them. To build llama.cpp for this CPU without AMX (add other CMake flags, such as "
            "-DGGML_RPC=ON, inside the quotes):",
            file=out,
        )
        print(f"  {data['cpu_buffers']['amx_free_build']}", file=out)
    print_settings(data["settings"], out)
    return 0


def print_settings(rows: list[dict[str, str]], out: TextIO) -> None:
    """Print the settings table: variable, current value, where it came from, what it does."""
    print("\nsettings (environment variables; command-line flags override them):", file=out)
    name_width = max(len(row["env"]) for row in rows)
    source_width = max(len(row["source"]) for row in rows)
    for row in rows:
        print(
            f"  {row['env']:<{name_width}}  {row['value']:<24} {row['source']:<{source_width}}  "
            f"{row['description']}",
            file=out,
        )
