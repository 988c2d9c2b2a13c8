"""The memory plan on tiny GGUFs: KV, sliding windows, compute graph replay, devices, JSON and the CLI."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf_factory import write_tiny_llama

from candor.cli import plan as plan_cli
from candor.errors import InvalidParameter
from candor.gguf_file import read_gguf
from candor.identity import ModelCard, read_card
from candor.plan import (
    MIB,
    _Graph,
    _View,
    choose_gpu_layers,
    memory_plan,
    read_shapes,
    repack_types,
    replay,
)

NO_REPACK: tuple[str, ...] = ()  # keep unit tests independent of the CPU they run on


def write_model(
    path: Path,
    *,
    arch: str = "llama",
    n_layer: int = 4,
    n_embd: int = 256,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 512,
    n_vocab: int = 1000,
    tensor_type: str = "F16",
    tied: bool = False,
    gemma_norms: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Write a zero-weight GGUF of any shape (for the plan, which reads only the header)."""
    w = gguf.GGUFWriter(str(path), arch)
    head = n_embd // n_head
    w.add_context_length(32768)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    for key, value in (metadata or {}).items():
        if isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_uint32(key, value)
    qtype = gguf.GGMLQuantizationType[tensor_type]

    def matrix(name: str, rows: int, cols: int) -> None:
        data = np.zeros((rows, cols), dtype=np.float32)
        if tensor_type == "F16":
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def vector(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    matrix("token_embd.weight", n_vocab, n_embd)
    vector("output_norm.weight", n_embd)
    if not tied:
        matrix("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", n_embd)
        matrix(b + "attn_q.weight", n_head * head, n_embd)
        matrix(b + "attn_k.weight", n_head_kv * head, n_embd)
        matrix(b + "attn_v.weight", n_head_kv * head, n_embd)
        matrix(b + "attn_output.weight", n_embd, n_head * head)
        vector(b + "ffn_norm.weight", n_embd)
        matrix(b + "ffn_gate.weight", n_ff, n_embd)
        matrix(b + "ffn_up.weight", n_ff, n_embd)
        matrix(b + "ffn_down.weight", n_embd, n_ff)
        if gemma_norms:
            for name in ("attn_q_norm", "attn_k_norm"):
                vector(b + name + ".weight", head)
            for name in ("post_attention_norm", "post_ffw_norm"):
                vector(b + name + ".weight", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return read_card(path)


def plan(card: ModelCard, **options: Any) -> Any:
    return memory_plan(card, cpu_features=NO_REPACK, **options)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    """The tiny llama of the other fast tests: 2 layers, 4 KV heads of 16 values, 300 tokens."""
    return read_card(write_tiny_llama(tmp_path_factory.mktemp("plan") / "tiny.gguf"))


@pytest.fixture(scope="module")
def llama64(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    """A llama with 64-value heads (4 layers, 2 KV heads), which quantized KV types accept."""
    return write_model(tmp_path_factory.mktemp("plan") / "llama64.gguf")


def gemma3(tmp_path: Path, **metadata: Any) -> ModelCard:
    return write_model(
        tmp_path / "gemma3.gguf",
        arch="gemma3",
        n_layer=12,
        n_head=4,
        n_head_kv=1,
        tied=True,
        gemma_norms=True,
        metadata={f"gemma3.{k}": v for k, v in metadata.items()},
    )


# --- KV cache -------------------------------------------------------------------------------------------


def test_kv_cache_is_layers_times_heads_times_cells(tiny: ModelCard) -> None:
    p = plan(tiny, ctx=100)
    assert (p.n_ctx, p.n_ctx_seq) == (256, 256)  # llama.cpp pads the context to 256
    per_cell = 2 * (4 * 16 * 2) * 2  # layers x (heads x head size x f16 bytes) x (K and V)
    assert p.bytes_of("kv") == per_cell * 256
    assert plan(tiny, ctx=1000).bytes_of("kv") == per_cell * 1024
    assert plan(tiny, ctx=4096).bytes_of("kv") == 16 * plan(tiny, ctx=256).bytes_of("kv")


def test_a_unified_cache_is_shared_by_slots_and_outputs_are_per_slot(tiny: ModelCard) -> None:
    one, eight = plan(tiny, ctx=2048), plan(tiny, ctx=2048, parallel=8)
    assert one.bytes_of("kv") == eight.bytes_of("kv")
    assert one.bytes_of("output") == 300 * 4 and eight.bytes_of("output") == 8 * 300 * 4
    split = plan(tiny, ctx=2000, parallel=3, kv_unified=False)  # 2048 / 3 -> 682 -> 768 per stream
    assert (split.n_ctx_seq, split.n_ctx) == (768, 2304)
    assert split.bytes_of("kv") == one.bytes_of("kv") * 2304 // 2048


def test_quantized_kv_types_use_their_block_sizes(llama64: ModelCard, tiny: ModelCard) -> None:
    f16 = plan(llama64, ctx=2048).bytes_of("kv")
    assert f16 == 4 * 2 * (2 * 64 * 2) * 2048
    assert plan(llama64, ctx=2048, kv_type="q8_0").bytes_of("kv") == f16 * 34 // 64  # 34 bytes per 32
    assert plan(llama64, ctx=2048, kv_type="q4_0").bytes_of("kv") == f16 * 18 // 64  # 18 bytes per 32
    with pytest.raises(InvalidParameter, match="f16"):
        plan(tiny, ctx=256, kv_type="q8_0")  # 16-value heads: llama.cpp refuses them too
    with pytest.raises(InvalidParameter, match="q8_0"):
        plan(tiny, ctx=256, kv_type="f32")


# --- sliding-window attention ---------------------------------------------------------------------------


def test_gemma3_slides_five_layers_in_six(tmp_path: Path) -> None:
    card = gemma3(tmp_path, **{"attention.sliding_window": 512})
    shapes = read_shapes(read_gguf(card.path))
    assert [il for il, s in enumerate(shapes.is_swa) if not s] == [5, 11]
    p = plan(card, ctx=8192)
    kv = {part.name: part.bytes for part in p.parts if part.kind == "kv"}
    per_layer = 64 * 2 * 2 * 8192  # one KV head of 64 values, K and V, f16, full-size SWA cache
    assert kv == {
        "KV cache (global layers)": 2 * per_layer,
        "KV cache (sliding-window layers)": 10 * per_layer,
    }


def test_a_small_sliding_cache_holds_the_window_per_slot_plus_a_batch(tmp_path: Path) -> None:
    card = gemma3(tmp_path, **{"attention.sliding_window": 512})
    for parallel, cells in ((1, 1024), (4, 2560), (32, 8192)):  # min(n_ctx, 512 * slots + 512), padded
        p = plan(card, ctx=8192, parallel=parallel, swa_full=False)
        swa = next(part for part in p.parts if part.name == "KV cache (sliding-window layers)")
        assert swa.bytes == 10 * 64 * 2 * 2 * cells


def test_checkpoints_are_planned_for_a_small_sliding_cache_only(tmp_path: Path) -> None:
    card = gemma3(tmp_path, **{"attention.sliding_window": 512})

    def checkpoints(**options: Any) -> int:
        return plan(card, ctx=8192, parallel=4, kv_unified=False, **options).bytes_of("checkpoints")

    # 512 cells of 10 layers' K and V rows (64 f16 values each), each cell with its position and
    # sequence, and the header llama_kv_cache::state_write writes (4 streams, 20 tensors)
    one = 512 * (10 * 2 * 64 * 2 + 12) + 4 + 4 + 4 * 4 + 4 + 4 + 20 * 12
    assert checkpoints(swa_full=False, checkpoints=3) == 4 * 3 * one
    assert checkpoints(swa_full=True, checkpoints=3) == 0  # the full cache needs none
    assert checkpoints(swa_full=False) == 0  # none asked
    assert checkpoints(swa_full=False, checkpoints=3, embeddings=True) == 0


def test_sliding_windows_follow_each_architecture(tmp_path: Path) -> None:
    assert not any(read_shapes(read_gguf(gemma3(tmp_path).path)).is_swa)  # gemma3 needs a window
    gemma2 = write_model(tmp_path / "g2.gguf", arch="gemma2", n_layer=4)  # default window 4096, 1 in 2
    shapes = read_shapes(read_gguf(gemma2.path))
    assert (shapes.is_swa, shapes.n_swa) == ((True, False, True, False), 4096)
    llama = write_model(tmp_path / "l.gguf", metadata={"llama.attention.sliding_window": 4096})
    assert not any(read_shapes(read_gguf(llama.path)).is_swa)  # llama.cpp ignores the key for llama
    card = gemma3(tmp_path, **{"attention.sliding_window": 512, "attention.sliding_window_pattern": 3})
    assert [il for il, s in enumerate(read_shapes(read_gguf(card.path)).is_swa) if not s] == [2, 5, 8, 11]
    pattern = [True, False] * 6
    card = gemma3(tmp_path, **{"attention.sliding_window": 512, "attention.sliding_window_pattern": pattern})
    assert read_shapes(read_gguf(card.path)).is_swa == tuple(pattern)


# --- compute buffer -------------------------------------------------------------------------------------


def test_the_allocator_reuses_parents_in_place_and_fills_holes() -> None:
    def peak(through_view: bool) -> int:
        g = _Graph()
        g.input(100)  # an input nothing reads (like inp_embd): kept, 128 bytes once aligned
        a = g.op(64)
        b = g.op(64, a, inplace=True)  # a's only reader, same size: takes a's place
        c = g.op(64, _View(b) if through_view else b, inplace=True)
        g.op(32, c)  # allocated while c is alive: in a hole if there is one, else at the end
        return replay(g, alignment=32)

    assert peak(through_view=False) == 128 + 64 + 32
    assert peak(through_view=True) == 128 + 64 + 64  # a view is never reused in place; 32 fills b's hole


def test_compute_holds_the_worst_case_logits(tiny: ModelCard, llama64: ModelCard) -> None:
    p = plan(llama64, ctx=4096)
    logits = 1000 * 512 * 4  # n_vocab x n_ubatch rows x f32
    assert logits < p.bytes_of("compute") < logits + 20 * 256 * 512 * 4
    assert plan(llama64, ctx=4096, n_batch=128).bytes_of("compute") < p.bytes_of("compute") / 3
    small = plan(tiny, ctx=100)  # the graph has min(n_ctx, n_batch) tokens
    assert small.n_batch == small.n_ubatch == 100
    assert 300 * 100 * 4 < small.bytes_of("compute") < plan(tiny, ctx=1000).bytes_of("compute")


def test_the_mask_of_a_long_context_grows_the_compute_buffer(llama64: ModelCard) -> None:
    short, long = plan(llama64, ctx=2048), plan(llama64, ctx=65536)
    mask_growth = (65536 - 2048) * 512 * 2  # f16 mask rows: cells x tokens
    assert long.bytes_of("compute") - short.bytes_of("compute") == pytest.approx(mask_growth, rel=0.05)


# --- weights and devices ----------------------------------------------------------------------------------


def test_weights_are_the_mapped_file_span_plus_repacked_copies(tmp_path: Path) -> None:
    card = write_model(tmp_path / "q4.gguf", tensor_type="Q4_0")
    header = read_gguf(card.path)
    data = sum(t.n_bytes for t in header.tensors)
    assert plan(card, ctx=512).bytes_of("weights") == data  # no padding between these tensors
    p = memory_plan(card, ctx=512, cpu_features=("AVX2", "REPACK"))
    moved = [t for t in header.tensors if t.type_name == "Q4_0" and t.name != "token_embd.weight"]
    assert [part.bytes for part in p.parts if part.name == "weights (CPU repack copy)"] == [
        sum(t.n_bytes for t in moved)
    ]
    # the mapping spans the tensors left on the CPU: from token_embd to the last block's last norm
    kept = [t for t in header.tensors if t not in moved]
    span = max(t.offset + t.n_bytes for t in kept) - min(t.offset for t in kept)
    assert [part.bytes for part in p.parts if part.name == "weights"] == [span]
    assert repack_types(("AVX2",)) == {} and "Q4_K" in repack_types(("AVX2", "REPACK"))


def test_offloaded_layers_are_planned_for_a_gpu_and_flagged_without_one(llama64: ModelCard) -> None:
    header = read_gguf(llama64.path)
    cpu_only = plan(llama64, ctx=2048)
    assert {p.device for p in cpu_only.parts} == {"CPU"} and cpu_only.gpu_layers == 0
    everything = plan(llama64, ctx=2048, gpu_layers=-1)
    assert everything.gpu_layers == 5  # 4 layers and the output layer
    embd = next(t.n_bytes for t in header.tensors if t.name == "token_embd.weight")
    assert everything.bytes_of("weights", "CPU") == embd  # the input layer stays on the CPU
    assert everything.bytes_of("kv", "GPU") == cpu_only.bytes_of("kv")
    assert all(not p.verified for p in everything.parts if p.device == "GPU")
    assert any("no GPU backend" in note for note in everything.notes)
    assert "llama_params_fit" in everything.decided_by
    two = plan(llama64, ctx=2048, gpu_layers=2, gpu=True)  # the output layer and the last block
    assert two.bytes_of("kv", "GPU") == cpu_only.bytes_of("kv") // 4
    assert all(p.verified for p in two.parts)


def test_choose_gpu_layers_fits_the_free_memory(llama64: ModelCard) -> None:
    full = plan(llama64, ctx=2048, gpu_layers=-1, gpu=True)
    assert (
        choose_gpu_layers(llama64, free_gpu_bytes=10**12, ctx=2048, gpu=True, cpu_features=NO_REPACK) == full
    )
    tight = choose_gpu_layers(
        llama64, free_gpu_bytes=full.bytes_of(device="GPU") - 1, ctx=2048, gpu=True, cpu_features=NO_REPACK
    )
    assert 0 < tight.gpu_layers < full.gpu_layers
    nothing = choose_gpu_layers(llama64, free_gpu_bytes=0, ctx=2048, gpu=True, cpu_features=NO_REPACK)
    assert nothing.gpu_layers == 0


# --- reporting ----------------------------------------------------------------------------------------------


def test_the_plan_serialises_to_json(tiny: ModelCard) -> None:
    p = plan(tiny, ctx=2048, parallel=4)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["total_bytes"] == p.total == sum(part["bytes"] for part in data["parts"])
    assert data["by_device"] == {"CPU": p.total}
    assert {part["kind"] for part in data["parts"]} == {"weights", "kv", "compute", "output"}
    assert (data["ctx"], data["n_ctx"], data["parallel"], data["kv_type"]) == (2048, 2048, 4, "f16")
    assert data["total_mib"] == round(p.total / MIB, 2)


def test_candor_plan_prints_each_part_and_the_total(
    tiny: ModelCard, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    plan_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", str(tiny.path), "--ctx", "256", "--parallel", "2"])
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "KV cache" in text and "compute buffer" in text and "output buffer" in text
    # As the scheduler loads models: each slot may hold --ctx tokens, one logits row per slot.
    expected = memory_plan(tiny, ctx=512, parallel=2, n_outputs_max=2, kv_unified=False)
    assert f"{expected.total / MIB:.2f} MiB" in text
    args = parser.parse_args(
        ["plan", str(tiny.path), "--ctx", "256", "--parallel", "1", "--kv-type", "f16", "--json"]
    )
    assert args.handler(args) == 0
    planned = memory_plan(tiny, ctx=256, n_outputs_max=1).total
    assert json.loads(capsys.readouterr().out)["total_bytes"] == planned


def plan_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    parser = argparse.ArgumentParser()
    plan_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", *argv])
    assert args.handler(args) == 0
    return capsys.readouterr().out.splitlines()[1].strip()


def test_candor_plan_says_the_context_asked_per_slot_and_what_it_becomes(
    tiny: ModelCard, default_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gemma = str(default_model_path)
    assert plan_line(capsys, gemma, "--ctx", "8192", "--parallel", "4").startswith(
        "context 8192 tokens per slot (asked 8192), 4 slots x 8192 = 32768 KV cells, KV f16"
    )
    assert plan_line(capsys, gemma, "--ctx", "8192", "--parallel", "1").startswith(
        "context 8192 tokens (asked 8192), 1 slot,"
    )
    # llama.cpp pads each slot's cells to a multiple of 256
    assert plan_line(capsys, gemma, "--ctx", "1000", "--parallel", "3").startswith(
        "context 1024 tokens per slot (asked 1000, padded to a multiple of 256), "
        "3 slots x 1024 = 3072 KV cells"
    )
    # As candor loads it, a request never gets more than the model was trained for (256 tokens here).
    assert plan_line(capsys, str(tiny.path), "--ctx", "4096", "--parallel", "2").startswith(
        "context 256 tokens per slot (asked 4096, the most the model was trained for is 256), "
        "2 slots x 256 = 512 KV cells"
    )
    capped = memory_plan(tiny, ctx=512, parallel=2, n_outputs_max=2, kv_unified=False)
    parser = argparse.ArgumentParser()
    plan_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", str(tiny.path), "--ctx", "4096", "--parallel", "2", "--json"])
    assert args.handler(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_bytes"] == capped.total and data["ctx_asked_per_slot"] == 4096
