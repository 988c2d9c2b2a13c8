"""Bounds on what one request may ask of the engine: grammar size and nesting, text llama.cpp can take.

llama.cpp parses GBNF recursively (deep nesting overflows the runner's stack) and checks every
alternative of a grammar at every step (a 100,000-value enum stalls a slot), so both are bounded here,
before a runner sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from candor.grammar_limits import MAX_GRAMMAR_CHARS, MAX_GRAMMAR_NESTING, check_grammar, grammar_nesting

__all__ = [
    "MAX_GRAMMAR_CHARS",
    "MAX_GRAMMAR_NESTING",
    "UnicodeRequest",
    "check_grammar",
    "check_grammar_option",
    "grammar_nesting",
    "refuse_surrogates",
]


def check_grammar_option(options: Mapping[str, Any], what: str = "the grammar") -> None:
    """Check options["grammar"], when there is one, before it reaches a runner."""
    grammar = options.get("grammar")
    if isinstance(grammar, str):
        check_grammar(grammar, what)


def refuse_surrogates(value: Any) -> Any:
    """Refuse text with lone UTF-16 surrogates (JSON's "\\ud800"): it has no UTF-8 form for llama.cpp.

    Walks nested lists and dicts without recursion (a body may nest as deep as the JSON parser allows).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "text must be valid Unicode: a lone surrogate (\\ud800-\\udfff) has no UTF-8 form"
                ) from None
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return value


class UnicodeRequest(BaseModel):
    """Base of every request body: unknown fields ignored (clients send vendor extensions), text that has no
    UTF-8 form refused with a 400."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _unicode_text(cls, data: Any) -> Any:
        return refuse_surrogates(data)
