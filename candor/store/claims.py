"""Names that cannot lie: compare what a model's name claims with what its file says it is."""

from __future__ import annotations

import re
from dataclasses import dataclass

from candor.identity import ModelCard, format_count

# Family words a name may use -> the GGUF architectures that family really ships as.
FAMILIES: dict[str, tuple[str, ...]] = {
    "llama": ("llama", "llama4", "mllama"),
    "qwen": ("qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen3moe", "qwen3next"),
    "gemma": ("gemma", "gemma2", "gemma3", "gemma3n", "gemma-embedding"),
    "mistral": ("llama", "mistral3"),
    "mixtral": ("llama",),
    "deepseek": ("deepseek", "deepseek2"),
    "phi": ("phi2", "phi3", "phimoe"),
    "falcon": ("falcon", "falcon-h1"),
    "granite": ("granite", "granitemoe", "granitehybrid"),
    "olmo": ("olmo", "olmo2", "olmoe"),
    "command-r": ("command-r", "cohere2"),
    "starcoder": ("starcoder", "starcoder2"),
    "mamba": ("mamba", "mamba2"),
}
_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.IGNORECASE)
_MOE = re.compile(r"\d+x\d+(?:\.\d+)?b", re.IGNORECASE)
_TOLERANCE = (0.75, 1.35)  # "7b" is 7.24B for Mistral, "8b" 8.03B for Llama 3, "32b" 32.8B for Qwen2.5


@dataclass(frozen=True)
class Claim:
    """One way a name disagrees with the file."""

    kind: str  # "family" or "size"
    message: str


def _size_claims(text: str) -> list[float]:
    if _MOE.search(text):
        return []  # "8x7b" counts experts, not parameters
    return [float(n) * (1e9 if unit.lower() == "b" else 1e6) for n, unit in _SIZE.findall(text)]


def _named_in_file(word: str, card: ModelCard) -> bool:
    own = " ".join(filter(None, (card.name, card.basename, card.finetune, card.architecture))).lower()
    bases = " ".join(b.label() for b in card.base_models).lower()
    return word in own.replace(" ", "-") or word in own or word in bases


def check_name(name: str, card: ModelCard) -> list[Claim]:
    """What the name claims that the metadata contradicts (empty when the name is honest)."""
    claims: list[Claim] = []
    lowered = name.lower()
    bare = lowered.split("/")[-1]  # hf.co/org/ is where it came from, not a claim about the model
    arch = card.architecture or "unknown"
    kind = "distill" if card.is_distill else "finetune" if card.is_finetune else "model"
    what = f"a {arch} {card.parameter_label} {kind} ({card.display_name})"
    for family, archs in FAMILIES.items():
        if family not in bare or arch in archs:
            continue
        if not _named_in_file(family, card):
            claims.append(Claim("family", f"the name says '{family}' but the file is {what}"))
        elif kind != "model" and "distill" not in bare and (card.finetune or "").lower() not in bare:
            claims.append(
                Claim("family", f"the name says '{family}' but the file is {what}, not {family} itself")
            )
    for claimed in _size_claims(bare):
        ratio = card.parameter_count / claimed if claimed else 0.0
        if not _TOLERANCE[0] <= ratio <= _TOLERANCE[1]:
            claims.append(
                Claim(
                    "size",
                    f"the name says {format_count(int(claimed))} parameters but the file "
                    f"has {card.parameter_label} ({card.parameter_count:,})",
                )
            )
    return claims
