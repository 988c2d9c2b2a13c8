"""`candor plan`: the memory a model and its context will take, computed before loading anything."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from candor.config import Settings
from candor.diagnostics import build_info, cpu_buffers
from candor.errors import InvalidParameter
from candor.gguf_file import read_gguf
from candor.plan import GENERATION_CHECKPOINTS, GENERATION_SWA_FULL, KV_TYPES, MIB, MemoryPlan, memory_plan
from candor.plan.context_size import ContextChoice, context_for, default_budget
from candor.preflight import checked_card
from candor.store.library import Library

EXAMPLES = """examples:
  candor plan                                  the default model as `candor serve` loads it
  (each of P slots has its own KV stream of --ctx cells; without --ctx or CANDOR_CTX, the model's
  training context, or the longest that fits the memory budget for every slot)
  candor plan gemma-3-270m:Q4_K_M --ctx 8192 --parallel 4 --kv-type q8_0
  candor plan ./model.gguf --gpu-layers -1 --json
"""


def register(sub: Any) -> None:
    """Add the `plan` command."""
    parser = sub.add_parser(
        "plan",
        help="show the memory a model will take, before loading it",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="a .gguf path or model name (default model)"
    )
    parser.add_argument(
        "--ctx", type=int, metavar="N", help="context tokens one request may use (CANDOR_CTX)"
    )
    parser.add_argument(
        "--parallel", type=int, metavar="P", help="parallel sequences (slots) (CANDOR_PARALLEL)"
    )
    parser.add_argument("--kv-type", choices=tuple(KV_TYPES), default="f16", help="KV cache element type")
    parser.add_argument("--batch", type=int, metavar="N", help="tokens per llama_decode (CANDOR_BATCH)")
    parser.add_argument(
        "--gpu-layers",
        type=int,
        metavar="N",
        help="layers to offload, -1 = all (default: CANDOR_GPU_LAYERS with a GPU backend, else none); "
        "without a GPU backend the GPU part is planned but marked unverified",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the plan, part by part, in MiB."""
    settings = Settings.from_env()
    path, _ = Library(settings).resolve(args.model)
    card = checked_card(path)
    info = build_info()
    parallel = settings.parallel if args.parallel is None else args.parallel
    if parallel < 1:
        raise InvalidParameter("--parallel must be at least 1")
    asked = settings.ctx if args.ctx is None else args.ctx
    if asked is not None and asked < 1:
        raise InvalidParameter(f"--ctx must be at least 1; got {asked}")
    header = read_gguf(path)
    extra = cpu_buffers(settings).extra

    def plan_for(per_slot: int) -> MemoryPlan:
        return memory_plan(
            card,
            ctx=per_slot * parallel,
            parallel=parallel,
            n_outputs_max=parallel,  # candor asks for one logits row per sequence
            kv_unified=False,  # the runner's: one KV stream per slot (one stream in all for one slot)
            swa_full=GENERATION_SWA_FULL,
            checkpoints=GENERATION_CHECKPOINTS,
            kv_type=args.kv_type,
            n_batch=args.batch or settings.batch,
            gpu_layers=_gpu_layers(args.gpu_layers, settings.gpu_layers, info.gpu_offload),
            gpu=info.gpu_offload,
            cpu_features=info.cpu_features,
            extra_buffers=extra,
            header=header,
        )

    # As candor loads it: capped at the context the model was trained for, then ctx cells per slot.
    choice = context_for(asked, card.context_length, lambda n: plan_for(n).total, default_budget())
    plan = plan_for(choice.per_slot)
    if args.json:
        # `ctx` there is what llama.cpp was asked for in all; these are per slot
        extra_fields = {"ctx_asked_per_slot": asked, "ctx_per_slot": choice.per_slot}
        print(json.dumps({**plan.to_dict(), **extra_fields, "ctx_reason": choice.reason()}, indent=2))
    else:
        print_plan(plan, card.display_name, choice)
    return 0


def _gpu_layers(asked: int | None, configured: int, gpu: bool) -> int:
    """Layers to plan on a GPU: as asked, else what candor would offload on this build."""
    if asked is not None:
        return asked
    return configured if gpu else 0


def context_line(plan: MemoryPlan, choice: ContextChoice) -> str:
    """The context per slot and why it is that long, as it is sized: padded by llama.cpp, one stream of
    cells per slot."""
    asked, used = choice.reason(), plan.ctx // plan.parallel
    if plan.n_ctx_seq > used:
        asked += ", padded to a multiple of 256"
    if plan.parallel == 1:
        return f"context {plan.n_ctx} tokens ({asked}), 1 slot"
    return (
        f"context {plan.n_ctx_seq} tokens per slot ({asked}), "
        f"{plan.parallel} slots x {plan.n_ctx_seq} = {plan.n_ctx} KV cells"
    )


def print_plan(plan: MemoryPlan, name: str, choice: ContextChoice) -> None:
    """Human-readable table: one line per part, then the total per device and overall."""
    out = sys.stdout
    print(f"  {name} ({plan.architecture}), {plan.n_layer} layers", file=out)
    print(f"  {context_line(plan, choice)}, KV {plan.kv_type}, batch {plan.n_batch}", file=out)
    print(file=out)
    for part in plan.parts:
        flag = "" if part.verified else "  (unverified)"
        print(f"    {part.name:<34}{part.device:<5}{part.bytes / MIB:>10.2f} MiB{flag}", file=out)
    print(file=out)
    for device in sorted({p.device for p in plan.parts}):
        print(f"    {'total on ' + device:<39}{plan.bytes_of(device=device) / MIB:>10.2f} MiB", file=out)
    print(f"    {'total':<39}{plan.total / MIB:>10.2f} MiB", file=out)
    if plan.gpu_layers:
        print(
            f"\n  GPU layers: {plan.gpu_layers} of {plan.n_layer + 1}, decided by {plan.decided_by}", file=out
        )
    for note in plan.notes:
        print(f"  note: {note}", file=out)
