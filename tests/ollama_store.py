"""Build a small Ollama model store on disk, laid out as Ollama lays it out (see REFERENCE.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gguf_factory import truncated, write_tiny_llama

MEDIA = "application/vnd.ollama.image."
HOST = "registry.ollama.ai"

SYSTEM_PROMPT = "You are a tiny llama. Answer in one word."
PARAMS = {
    "temperature": 0.2,
    "top_k": 7,
    "stop": ["<|end|>", "User:"],
    "num_ctx": 256,
    "num_gpu": 99,  # a loader option candor does not take from a manifest: dropped
    "mirostat": 2,  # a sampler candor does not have: dropped
}
GO_TEMPLATE = "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
LICENSE_TEXT = "Tiny Llama License: do as you like."
PROJECTOR = b"GGUF stand-in for a vision projector"

# candor name -> expected status ("imported", "unusable" or "skipped")
EXPECTED = {
    "tiny:latest": "imported",
    "tiny:chatty": "imported",
    "someone/tiny:v1": "imported",
    "hf.co/user/tiny-GGUF:Q8_0": "imported",
    "broken:latest": "unusable",  # truncated GGUF: fails preflight
    "martian:latest": "unusable",  # well-formed, but llama.cpp does not know the architecture
    "lora:latest": "unusable",  # has an adapter layer
    "tampered:latest": "unusable",  # blob content does not match its digest
    "dangling:latest": "skipped",  # model blob missing
    "evil:latest": "skipped",  # digest sha256:../../etc/passwd
    "malformed:latest": "skipped",  # not JSON
    "nomodel:latest": "skipped",  # no model layer
}


@dataclass
class OllamaStore:
    """The fixture store: its root and the blob of each kind of model in it."""

    root: Path
    good_blob: Path = field(default_factory=Path)
    blobs: dict[str, Path] = field(default_factory=dict)

    @property
    def blob_dir(self) -> Path:
        """Folder of the content-addressed blobs."""
        return self.root / "blobs"

    def add_blob(self, data: bytes) -> tuple[str, Path]:
        """Store bytes under their real sha256; return (digest, path)."""
        hex_digest = hashlib.sha256(data).hexdigest()
        path = self.blob_dir / f"sha256-{hex_digest}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(data)
        return f"sha256:{hex_digest}", path

    def layer(self, kind: str, data: bytes) -> dict[str, object]:
        """A manifest layer for a new blob of this kind."""
        digest, _ = self.add_blob(data)
        return {"mediaType": MEDIA + kind, "digest": digest, "size": len(data)}

    def write_manifest(self, parts: Sequence[str], layers: Sequence[dict[str, object]]) -> Path:
        """Write manifests/HOST/NAMESPACE/MODEL/TAG with a config blob and these layers."""
        config = self.layer("config", json.dumps({"model_format": "gguf"}).encode())
        config["mediaType"] = "application/vnd.docker.container.image.v1+json"
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config,
            "layers": list(layers),
        }
        return self.write_raw_manifest(parts, json.dumps(manifest).encode())

    def write_raw_manifest(self, parts: Sequence[str], data: bytes) -> Path:
        """Write a manifest file with exactly these bytes."""
        path = self.root.joinpath("manifests", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def library(model: str, tag: str = "latest") -> tuple[str, str, str, str]:
    """Manifest path parts of an Ollama library model."""
    return (HOST, "library", model, tag)


def build_ollama_store(root: Path, scratch: Path) -> OllamaStore:
    """Write the fixture store under root (scratch holds the GGUFs before they become blobs)."""
    scratch.mkdir(parents=True, exist_ok=True)
    store = OllamaStore(root)
    good = write_tiny_llama(scratch / "tiny.gguf").read_bytes()
    model = store.layer("model", good)
    store.good_blob = store.blob_dir / f"sha256-{hashlib.sha256(good).hexdigest()}"
    store.blobs["good"] = store.good_blob

    store.write_manifest(library("tiny"), [model])
    store.write_manifest(
        library("tiny", "chatty"),
        [
            model,
            store.layer("template", GO_TEMPLATE.encode()),
            store.layer("system", SYSTEM_PROMPT.encode()),
            store.layer("params", json.dumps(PARAMS).encode()),
            store.layer("license", LICENSE_TEXT.encode()),
            store.layer("projector", PROJECTOR),
        ],
    )
    store.write_manifest((HOST, "someone", "tiny", "v1"), [model])
    store.write_manifest(("hf.co", "user", "tiny-GGUF", "Q8_0"), [model])

    broken = truncated(scratch / "tiny.gguf", scratch / "broken.gguf", 200).read_bytes()
    broken_layer = store.layer("model", broken)
    store.blobs["broken"] = store.blob_dir / f"sha256-{hashlib.sha256(broken).hexdigest()}"
    store.write_manifest(library("broken"), [broken_layer])

    martian = write_tiny_llama(scratch / "martian.gguf", arch="martian").read_bytes()
    store.write_manifest(library("martian"), [store.layer("model", martian)])

    store.write_manifest(library("lora"), [model, store.layer("adapter", b"not really a LoRA")])

    tampered_bytes = write_tiny_llama(scratch / "tampered.gguf", seed=3).read_bytes()
    tampered = store.layer("model", tampered_bytes)
    tampered_path = store.blob_dir / f"sha256-{str(tampered['digest']).split(':')[1]}"
    tampered_path.write_bytes(tampered_bytes[:-4] + b"\x00\x00\x00\x01")
    store.blobs["tampered"] = tampered_path
    store.write_manifest(library("tampered"), [tampered])

    missing = {"mediaType": MEDIA + "model", "digest": "sha256:" + "ab" * 32, "size": 1234}
    store.write_manifest(library("dangling"), [missing])

    evil = {"mediaType": MEDIA + "model", "digest": "sha256:../../etc/passwd", "size": 1}
    store.write_manifest(library("evil"), [evil])

    store.write_raw_manifest(library("malformed"), b'{"schemaVersion": 2, "layers": [')

    store.write_manifest(library("nomodel"), [store.layer("system", b"no weights here")])
    return store
