"""The default context: as long as the model was trained for, as far as the memory budget allows.

An agent's first request is 10-30k tokens, so a fixed small default (Ollama's 4,096 for years) cannot
hold one. Each slot gets the model's training context unless the memory plan for every slot at that
size exceeds the budget; then the longest context (a multiple of 256, llama.cpp's padding) that fits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from candor.plan.kv import CTX_PAD

# A file that does not say how long a context it was trained for gets llama.cpp's usual default.
UNKNOWN_TRAINED = 4096
# Below this a chat hardly fits; the budget is then too small for the model, and loading says so.
FLOOR = 2048
# The default memory budget's share of RAM (the rest is the OS's, the server's and other programs').
BUDGET_SHARE = 0.75


def physical_memory() -> int:
    """Bytes of RAM."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_budget() -> int:
    """Bytes loaded models may take when no budget is set."""
    return int(physical_memory() * BUDGET_SHARE)


@dataclass(frozen=True)
class ContextChoice:
    """A per-slot context and why it is that long."""

    per_slot: int
    trained: int | None  # the model's training context, if its file says
    limited_by: str  # "setting", "training" or "memory"
    asked: int | None = None  # what a setting or request asked for; None: auto

    def reason(self) -> str:
        """A phrase for `candor plan` and /api/ps: where the length comes from."""
        if self.limited_by == "setting":
            return f"asked {self.asked}"
        if self.limited_by == "training":
            if self.asked is not None:
                return f"asked {self.asked}, the most the model was trained for is {self.trained}"
            return "the model's training context" if self.trained else "the model does not say its own"
        return (
            f"the most the memory budget fits (the model was trained for {self.trained or 'an unknown'}); "
            "set CANDOR_CTX to choose"
        )


def context_for(
    asked: int | None, trained: int | None, cost: Callable[[int], int], budget: int
) -> ContextChoice:
    """The context asked for (capped at the training context), or with None the longest that fits."""
    return chosen_context(asked, trained) or fit_context(trained, cost, budget)


def chosen_context(asked: int | None, trained: int | None) -> ContextChoice | None:
    """The context a setting or request asked for, capped at the training context; None for auto."""
    if asked is None:
        return None
    if trained and asked > trained:
        return ContextChoice(trained, trained, "training", asked)
    return ContextChoice(asked, trained, "setting", asked)


def fit_context(trained: int | None, cost: Callable[[int], int], budget: int) -> ContextChoice:
    """The longest per-slot context, up to the training context, whose plan `cost(per_slot)` (bytes,
    growing with the context) stays within `budget`."""
    top = trained or UNKNOWN_TRAINED
    if cost(top) <= budget:
        return ContextChoice(top, trained, "training")
    low = min(FLOOR, top)
    if cost(low) > budget:
        return ContextChoice(low, trained, "memory")
    # Binary search over multiples of CTX_PAD: cost(low) fits, cost(top) does not.
    lo, hi = low // CTX_PAD, top // CTX_PAD
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(mid * CTX_PAD) <= budget:
            lo = mid
        else:
            hi = mid
    return ContextChoice(max(low, lo * CTX_PAD), trained, "memory")
