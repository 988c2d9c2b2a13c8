"""The memory plan against what llama.cpp actually allocates, as it logs its buffer sizes.

Two architectures: the default model (gemma3: sliding-window layers, 262k vocabulary, Q4_K_M with tensors that
ggml-cpu repacks) and a llama written here (grouped KV heads of 64 values, Q4_0 matrices), for every mix of
three contexts, three slot counts and three KV types. Each part and the total must be within 10%.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf_factory import BYTE, CONTROL, NORMAL, vocabulary

from candor.engine.build_info import build_info
from candor.engine.context import ContextConfig, NativeContext
from candor.engine.native_model import NativeModel
from candor.identity import read_card
from candor.plan import KV_TYPES, MIB, MemoryPlan, memory_plan

CONTEXTS = (512, 2048, 8192)
SLOTS = (1, 4, 8)
TOLERANCE = 0.10
LOG_ROUNDING = 0.005  # llama.cpp prints MiB with two decimals
BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size =\s+([\d.]+) MiB")
PART_OF = {"model": "weights", "KV": "kv", "compute": "compute", "output": "output"}


def write_llama(
    path: Path,
    *,
    n_embd: int = 256,
    n_ff: int = 768,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_layer: int = 4,
    n_vocab: int = 8192,
    tensor_type: str = "Q4_0",
) -> Path:
    """A llama that llama.cpp loads, wider than the tiny fixture: the SPM vocabulary padded with words."""
    base = vocabulary()
    vocab = base + [f"w{i}" for i in range(n_vocab - len(base))]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Plan Llama")
    w.add_context_length(32768)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(vocab) - 259)])
    w.add_token_types([CONTROL] * 3 + [BYTE] * 256 + [NORMAL] * (len(vocab) - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)
    qtype = gguf.GGMLQuantizationType[tensor_type]
    head = n_embd // n_head

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    matrix("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    matrix("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        matrix(b + "attn_q.weight", n_head * head, n_embd)
        matrix(b + "attn_k.weight", n_head_kv * head, n_embd)
        matrix(b + "attn_v.weight", n_head_kv * head, n_embd)
        matrix(b + "attn_output.weight", n_embd, n_head * head)
        w.add_tensor(b + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        matrix(b + "ffn_gate.weight", n_ff, n_embd)
        matrix(b + "ffn_up.weight", n_ff, n_embd)
        matrix(b + "ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class _Lines(logging.Handler):
    """Every line llama.cpp logs (the engine's LogSink keeps only its last 200, too few at debug level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def buffers(self) -> dict[str, float]:
        """MiB per plan part, summed over llama.cpp's buffer lines since the last call."""
        found = {part: 0.0 for part in PART_OF.values()}
        for line in self.lines:
            m = BUFFER.search(line)
            if m:
                found[PART_OF[m.group(2)]] += float(m.group(3))
        self.lines.clear()
        return found


@pytest.fixture(scope="module")
def llama_log() -> Iterator[_Lines]:
    logger = logging.getLogger("candor.llama_cpp")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def plan_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("plan") / "plan-llama.gguf")


@dataclass(frozen=True)
class Comparison:
    """One configuration: the plan and what llama.cpp logged, in MiB per part."""

    config: tuple[int, int, str]
    planned: dict[str, float]
    logged: dict[str, float]

    def errors(self) -> dict[str, float]:
        """Relative error per part, after allowing for the log's rounding."""
        out = {}
        for part, logged in self.logged.items():
            off = max(0.0, abs(self.planned[part] - logged) - LOG_ROUNDING * (4 if part == "total" else 1))
            out[part] = off / logged if logged else 0.0
        return out


def compare(path: Path, log: _Lines) -> list[Comparison]:
    """Load the model once, create every context, and set each plan beside llama.cpp's own sizes."""
    features = build_info().cpu_features
    card = read_card(path)
    log.buffers()
    model = NativeModel(path, gpu_layers=0)
    weights = log.buffers()["weights"]
    results = []
    try:
        for ctx in CONTEXTS:
            for slots in SLOTS:
                for kv_type in KV_TYPES:
                    # llama.cpp's default output sizing, and candor's (one logits row per sequence).
                    for outputs in (0, slots):
                        config = ContextConfig(
                            n_ctx=ctx, n_batch=512, n_seq_max=slots, kv_type=kv_type, n_outputs_max=outputs
                        )
                        NativeContext(model, config).close()
                        logged = {**log.buffers(), "weights": weights}
                        logged["total"] = sum(logged.values())
                        plan = memory_plan(
                            card,
                            ctx=ctx,
                            parallel=slots,
                            kv_type=kv_type,
                            cpu_features=features,
                            n_outputs_max=outputs,
                            swa_full=config.swa_full,
                            extra_buffers=model.cpu_buffers.extra,  # as this machine loads it
                        )
                        results.append(Comparison((ctx, slots, kv_type, outputs), planned(plan), logged))
    finally:
        model.close()
    return results


def planned(plan: MemoryPlan) -> dict[str, float]:
    parts = {kind: plan.bytes_of(kind) / MIB for kind in ("weights", "kv", "compute", "output")}
    return {**parts, "total": plan.total / MIB}


def report(results: list[Comparison]) -> str:
    """A table: planned/logged MiB and the error, per part and configuration."""
    rows = [f"{'config':<20}" + "".join(f"{p:>26}" for p in results[0].logged)]
    for r in results:
        errors = r.errors()
        cells = [f"{r.planned[p]:.2f}/{r.logged[p]:.2f} {errors[p]:+5.1%}" for p in r.logged]
        rows.append(f"{r.config!s:<20}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(rows)


@pytest.mark.parametrize("which", ["default model (gemma3)", "plan llama"])
def test_plan_is_within_ten_percent_of_what_llama_cpp_allocates(
    which: str, default_model_path: Path, plan_llama: Path, llama_log: _Lines
) -> None:
    path = default_model_path if which.startswith("default") else plan_llama
    results = compare(path, llama_log)
    print(f"\n{which}: planned/logged MiB and error\n{report(results)}")
    worst = {part: max(r.errors()[part] for r in results) for part in results[0].logged}
    assert all(err <= TOLERANCE for err in worst.values()), f"worst errors {worst}\n{report(results)}"
    assert len(results) == len(CONTEXTS) * len(SLOTS) * len(KV_TYPES) * 2
