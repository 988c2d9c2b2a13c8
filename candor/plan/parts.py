"""What a memory plan is made of: its parts (one allocation each) and the plan that sums them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

MIB = 1 << 20


@dataclass(frozen=True)
class Part:
    """One allocation: what it holds, where, how many bytes, and how that was decided."""

    name: str
    kind: str  # "weights", "kv", "compute", "output" or "checkpoints"
    device: str  # "CPU" or "GPU"
    bytes: int
    verified: bool  # False: planned for a GPU that this llama.cpp build has no backend for
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, sizes in bytes and MiB."""
        return {**asdict(self), "mib": round(self.bytes / MIB, 2)}


@dataclass(frozen=True)
class MemoryPlan:
    """What loading a model with one context will allocate, part by part."""

    model: str
    architecture: str | None
    ctx: int  # as asked
    n_ctx: int  # as llama.cpp pads it
    n_ctx_seq: int
    parallel: int
    kv_type: str
    n_batch: int
    n_ubatch: int
    gpu: bool  # a GPU backend is present
    gpu_layers: int  # layers (the output layer counts as one) placed on the GPU
    n_layer: int
    decided_by: str
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        """Bytes of every part on every device."""
        return sum(p.bytes for p in self.parts)

    def bytes_of(self, kind: str | None = None, device: str | None = None) -> int:
        """Bytes of the parts of one kind and/or on one device."""
        return sum(p.bytes for p in self.parts if kind in (None, p.kind) and device in (None, p.device))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `candor plan --json`."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("parts", "notes")}
        return {
            **data,
            "parts": [p.to_dict() for p in self.parts],
            "by_device": {d: self.bytes_of(device=d) for d in sorted({p.device for p in self.parts})},
            "total_bytes": self.total,
            "total_mib": round(self.total / MIB, 2),
            "notes": list(self.notes),
        }
