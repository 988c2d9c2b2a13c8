"""GPU checks, run by hand on a machine whose llama.cpp has a CUDA (or other GPU) backend.

1. The memory plan's GPU and CPU bytes against the buffers llama.cpp logs, for all, half and no layers
   offloaded (the part of the plan a CPU-only machine cannot verify).
2. The scheduler's own placement: with CANDOR_GPU_LAYERS unset a runner offloads as many layers as fit in
   the GPU's free memory; then again with most of the GPU's memory taken by another process, where it
   must offload fewer layers and still load and answer.
3. Decode speed on the GPU: candor's library and one stream through the scheduler against llama-bench
   (tg128, same model, all layers offloaded), alternating, in the same run.

    python benchmarks/gpu_check.py --llama-bench PATH [--out DIR]

The model is a llama written here (F16, 12 layers, 2048 wide, about 1.4 GB), so the check needs no
download. Prints a report and writes it to DIR/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size =\s+([\d.]+) MiB")
PART_OF = {"model": "weights", "KV": "kv", "compute": "compute", "output": "output"}
CTX, PARALLEL, BATCH = 2048, 4, 512


class Lines(logging.Handler):
    """llama.cpp's log lines, as candor's engine forwards them to `logging`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def buffers(self) -> dict[str, dict[str, float]]:
        """MiB per device side (GPU: a device buffer; CPU: host memory, pinned or not) and plan part."""
        found: dict[str, dict[str, float]] = {"GPU": {}, "CPU": {}}
        for line in self.lines:
            m = BUFFER.search(line)
            if m:
                device = m.group(1)
                side = "CPU" if device.startswith("CPU") or device.endswith("_Host") else "GPU"
                part = PART_OF[m.group(2)]
                found[side][part] = found[side].get(part, 0.0) + float(m.group(3))
        self.lines.clear()
        return found


def plan_vs_logged(path: Path, log: Lines, n_layer: int) -> list[dict[str, Any]]:
    from candor.engine.context import ContextConfig, NativeContext
    from candor.engine.native_model import NativeModel
    from candor.identity import read_card
    from candor.plan import MIB, memory_plan

    card = read_card(path)
    rows = []
    for layers in (-1, n_layer // 2, 0):
        log.buffers()
        model = NativeModel(path, gpu_layers=layers)
        config = ContextConfig(
            n_ctx=CTX * PARALLEL,
            n_batch=BATCH,
            n_threads=4,
            n_seq_max=PARALLEL,
            n_outputs_max=PARALLEL,
            kv_unified=False,
        )
        NativeContext(model, config).close()
        model.close()
        logged = log.buffers()
        plan = memory_plan(
            card,
            ctx=CTX * PARALLEL,
            parallel=PARALLEL,
            n_batch=BATCH,
            n_outputs_max=PARALLEL,
            kv_unified=False,
            swa_full=config.swa_full,
            gpu_layers=layers,
            gpu=True,
        )
        row: dict[str, Any] = {"gpu_layers": layers, "plan_layers_on_gpu": plan.gpu_layers}
        for side in ("GPU", "CPU"):
            planned = {k: plan.bytes_of(k, side) / MIB for k in PART_OF.values()}
            row[side] = {
                k: {"planned_mib": round(planned[k], 2), "logged_mib": round(logged[side].get(k, 0.0), 2)}
                for k in PART_OF.values()
            }
            total_planned, total_logged = sum(planned.values()), sum(logged[side].values())
            row[side]["total"] = {
                "planned_mib": round(total_planned, 2),
                "logged_mib": round(total_logged, 2),
                "error": round((total_planned - total_logged) / total_logged, 4) if total_logged else None,
            }
        rows.append(row)
    return rows


def scheduler_placement(path: Path, tokens: int = 64) -> dict[str, Any]:
    from candor.scheduler import Scheduler, SchedulerConfig
    from candor.types import SamplingParams

    sched = Scheduler(config=SchedulerConfig(parallel=PARALLEL, keep_alive=60))
    try:
        started = time.perf_counter()
        sched.load(str(path), ctx=CTX)
        load_s = time.perf_counter() - started
        [info] = sched.loaded()
        params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        last = list(sched.generate(str(path), "Hello there, how", params=params))[-1]
        assert last.usage is not None and last.timings is not None
        return {
            "gpu_layers": info["gpu_layers"],
            "size_vram_mib": info["size_vram"] >> 20,
            "host_mib": info["size"] >> 20,
            "placement": info["placement"],
            "load_s": round(load_s, 2),
            "completion_tokens": last.usage.completion_tokens,
            "decode_tps": round(last.timings.decode_tokens_per_second(last.usage), 1),
        }
    finally:
        sched.close()


def gpu_used_mib() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def squeezed_placement(path: Path, leave_mib: int) -> dict[str, Any]:
    """Take all but `leave_mib` of the GPU's free memory in another process, then let a runner place."""
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, torch; free, _ = torch.cuda.mem_get_info(); "
            f"x = torch.empty(free - {leave_mib} * 2**20, dtype=torch.uint8, device='cuda'); "
            "print('held', x.numel() >> 20, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hog.stdout is not None
        held = hog.stdout.readline().strip()
        result = scheduler_placement(path, tokens=16)
        result["other_process"] = held
        result["gpu_memory_used_total"] = gpu_used_mib()
        return result
    finally:
        hog.kill()
        hog.wait()


def llama_bench_tg(bench: Path, path: Path, threads: int) -> float:
    out = subprocess.run(
        [
            str(bench),
            "-m",
            str(path),
            "-p",
            "0",
            "-n",
            "128",
            "-ngl",
            "99",
            "-t",
            str(threads),
            "-r",
            "3",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(json.loads(out.stdout)[0]["avg_ts"])


def candor_tg(path: Path, threads: int) -> float:
    import candor

    with candor.load(path, ctx=CTX, threads=threads, gpu_layers=-1) as model:
        model.generate("Hello", stream=False, max_tokens=8, temperature=0, ignore_eos=True)  # warm-up
        done = model.generate("Hello", stream=False, max_tokens=129, temperature=0, ignore_eos=True)
        return done.timings.decode_tokens_per_second(done.usage)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-bench", type=Path, help="llama-bench built with the same GPU backend")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("CANDOR_GPU_LAYERS", None)
    os.environ.setdefault("CANDOR_HOME", tempfile.mkdtemp(prefix="candor-gpu-"))

    from candor.engine.build_info import build_info, gpu_memory

    info = build_info()
    gpus = gpu_memory()
    report: dict[str, Any] = {
        "devices": info.devices,
        "gpu_offload": info.gpu_offload,
        "gpus": [g.__dict__ for g in gpus],
    }
    print(json.dumps(report, indent=1), flush=True)
    if not gpus:
        print("no GPU with its own memory in this llama.cpp build: nothing to check")
        return 1
    n_layer = 12
    path = Path(tempfile.mkdtemp()) / "gpu-llama-f16.gguf"
    started = time.perf_counter()
    # Written by another process: the `gguf` package pulls in libraries (sentencepiece's) that crashed
    # llama.cpp's CUDA model load when they shared its process.
    shape = f"n_embd=2048, n_ff=5632, n_head=16, n_head_kv=4, n_layer={n_layer}, n_vocab=32000"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from test_plan_vs_llama import write_llama; "
            f"write_llama(Path(sys.argv[1]), {shape}, tensor_type='F16')",
            str(path),
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path[:2], os.environ.get("PYTHONPATH", "")])},
    )
    print(
        f"model written: {path.stat().st_size >> 20} MiB in {time.perf_counter() - started:.1f} s", flush=True
    )

    logger = logging.getLogger("candor.llama_cpp")
    log = Lines()
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    report["plan_vs_logged"] = plan_vs_logged(path, log, n_layer)
    logger.removeHandler(log)
    print(json.dumps(report["plan_vs_logged"], indent=1), flush=True)

    report["scheduler_auto"] = scheduler_placement(path)
    print("scheduler, all free memory:", report["scheduler_auto"], flush=True)
    need = report["scheduler_auto"]["size_vram_mib"]
    # Leave the headroom, about 600 MiB for the runner's own CUDA context, and half of what the model needs.
    report["scheduler_squeezed"] = squeezed_placement(path, leave_mib=1024 + 600 + need // 2)
    print("scheduler, memory taken by another process:", report["scheduler_squeezed"], flush=True)

    if args.llama_bench:
        threads = 4
        ratios, rows = [], []
        for _ in range(args.runs):
            upstream = llama_bench_tg(args.llama_bench, path, threads)
            ours = candor_tg(path, threads)
            rows.append({"llama_bench_tg128": round(upstream, 1), "candor_library": round(ours, 1)})
            ratios.append(ours / upstream)
            print(rows[-1], flush=True)
        report["decode"] = {"runs": rows, "median_ratio": round(statistics.median(ratios), 3)}
        print("decode on the GPU, candor / llama-bench:", report["decode"]["median_ratio"], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
