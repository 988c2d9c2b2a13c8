"""The fallback's loading path, forced (CANDOR_CPU_BUFFERS=none) on the real default model wherever the
tests run, faulty CPU or not: no extra buffer type holds a weight, the memory plan matches what llama.cpp
allocates, greedy text equals the default path's up to a near-tie, and the server says what it chose."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from live_server import start_server, stop_server

import candor
from candor.config import Settings
from candor.engine import NativeModel
from candor.engine.build_info import extra_buffer_types
from candor.engine.cpu_selftest import CpuBuffers
from candor.engine.native import ensure_backend
from candor.engine.selftest_model import write_selftest_model
from candor.identity import read_card
from candor.plan import MIB, memory_plan

BUFFER = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")
LOG_ROUNDING = 0.005  # llama.cpp prints MiB with two decimals
# Greedy text may part where the two best tokens are this close: other kernels (repacked weights, a
# different summation order) move logits by a few hundredths on this model.
NEAR_TIE = 0.5
PROMPT = "The history of the printing press begins"


def model_buffers(path: Path, choice: CpuBuffers) -> dict[str, float]:
    """Load the model's weights as `choice` says and return llama.cpp's model buffers, in MiB."""
    sink = ensure_backend()
    mark = sink.mark()
    NativeModel(path, gpu_layers=0, cpu_buffers=choice).close()
    buffers: dict[str, float] = {}
    for line in sink.since(mark):
        found = BUFFER.search(line)
        if found:
            buffers[found.group(1)] = buffers.get(found.group(1), 0.0) + float(found.group(2))
    return buffers


def planned_buffers(path: Path, extra: bool) -> dict[str, float]:
    """The memory plan's weights, by the name of the llama.cpp buffer that holds them, in MiB."""
    plan = memory_plan(read_card(path), ctx=512, extra_buffers=extra)
    return {BUFFER_OF[part.name]: part.bytes / MIB for part in plan.parts if part.kind == "weights"}


BUFFER_OF = {"weights": "CPU_Mapped", "weights (AMX copy)": "AMX", "weights (CPU repack copy)": "CPU_REPACK"}


def test_the_fallback_puts_no_weight_in_an_extra_buffer_type_and_the_plan_matches(
    default_model_path: Path,
) -> None:
    buffers = model_buffers(default_model_path, CpuBuffers(False, "forced for the test"))
    assert buffers and not set(buffers) & {name for name, _ in extra_buffer_types()}
    assert set(buffers) == {"CPU_Mapped"}  # every weight stays in the file's mapping
    planned = planned_buffers(default_model_path, extra=False)
    assert set(planned) == {"CPU_Mapped"}  # no repacked or packed copy planned
    assert abs(planned["CPU_Mapped"] - buffers["CPU_Mapped"]) <= LOG_ROUNDING


def test_with_every_extra_buffer_type_each_holds_what_the_plan_says(
    default_model_path: Path, tmp_path: Path
) -> None:
    # Loading is safe even where these buffer types crash: the kernels only run on a decode.
    for path in (default_model_path, write_selftest_model(tmp_path / "selftest.gguf")):
        buffers = model_buffers(path, CpuBuffers(True, "every extra buffer type, for the test"))
        planned = planned_buffers(path, extra=True)
        assert set(planned) == set(buffers), (path.name, planned, buffers)
        for name, mib in buffers.items():
            assert abs(planned[name] - mib) <= LOG_ROUNDING, (path.name, name, planned[name], mib)


def greedy(path: Path, cpu_buffers: str) -> candor.Completion:
    settings = Settings.from_env(
        {"CANDOR_CPU_BUFFERS": cpu_buffers, "CANDOR_HOME": str(Settings.from_env().home)}
    )
    with candor.load(path, ctx=512, threads=2, settings=settings) as model:
        if cpu_buffers == "none":
            assert model.cpu_buffers.extra is False
        return model.generate(PROMPT, stream=False, temperature=0, max_tokens=48, ignore_eos=True, logprobs=2)


def test_greedy_text_on_the_fallback_equals_the_default_path_up_to_a_near_tie(
    default_model_path: Path,
) -> None:
    fallback = greedy(default_model_path, "none")
    default = greedy(default_model_path, "auto")  # what this machine loads without a setting
    assert len(fallback.tokens) == len(default.tokens) == 48
    for k, (ours, theirs) in enumerate(zip(fallback.tokens, default.tokens, strict=True)):
        if ours == theirs:
            continue
        # the first token that differs must be the default path's runner-up, behind by a near-tie
        (_best, best_lp), (second, second_lp) = default.logprobs[k].top[:2]
        assert fallback.logprobs[k].piece == second, f"token {k} differs beyond a near-tie"
        assert best_lp - second_lp < NEAR_TIE, (
            f"token {k}: the default path's best led by {best_lp - second_lp:.3f}"
        )
        break


def test_the_server_says_which_cpu_buffers_it_chose(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path / "home", env={"CANDOR_CPU_BUFFERS": "none"})
    try:
        done = httpx.post(
            url + "/api/generate",
            json={
                "model": "gemma-3-270m:Q4_K_M",
                "prompt": "Hi",
                "stream": False,
                "options": {"num_predict": 2},
            },
            timeout=120,
        )
        assert done.status_code == 200, done.text
        (loaded,) = httpx.get(url + "/api/ps", timeout=10).json()["models"]
        assert loaded["cpu_buffers"] == "no extra CPU buffer types (CANDOR_CPU_BUFFERS=none)"
    finally:
        stop_server(proc)
