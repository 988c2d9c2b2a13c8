"""The check every model file passes before llama.cpp sees it: a well-formed GGUF this build can run."""

from __future__ import annotations

from pathlib import Path

from candor.engine import build_info
from candor.engine.support import ggml_type_supported
from candor.errors import UnsupportedModel
from candor.gguf_file import GGUFHeader, read_gguf
from candor.identity import TURN_TOKENS, ModelCard


def _hint(path: Path) -> str:
    if path.name.startswith("sha256-") and "blobs" in path.parts:
        return (
            "; this is an Ollama blob, and some of Ollama's library models are GGUFs that Ollama rewrites "
            "while loading, which stock llama.cpp cannot run: get the model as a GGUF from Hugging Face "
            "instead (candor pull hf.co/ORG/REPO:QUANT)"
        )
    return "; upgrade llama-cpp-python for a newer llama.cpp, or download another quantization of the model"


def preflight(path: Path) -> GGUFHeader:
    """Check the header (structure, sizes, offsets) and that llama.cpp knows every tensor type."""
    header = read_gguf(path, find_tokens=TURN_TOKENS)
    unsupported = sorted(
        {t.type_name for t in header.tensors if not ggml_type_supported(t.ggml_type, t.type_name)}
    )
    if unsupported:
        build = build_info().llama_cpp_commit
        raise UnsupportedModel(
            f"{path} uses tensor type(s) {', '.join(unsupported)} that this llama.cpp build ({build}) "
            f"cannot run{_hint(path)}"
        )
    return header


def checked_card(path: Path) -> ModelCard:
    """Preflight a file and describe the model in it."""
    return ModelCard.from_header(preflight(path))
