"""Bounds on what one request may ask of the engine: grammar size and nesting, text llama.cpp can take.

llama.cpp parses GBNF recursively (deep nesting overflows the runner's stack) and checks every
alternative of a grammar at every step (a 100,000-value enum stalls a slot), so both are bounded here,
before a runner sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from candor.errors import InvalidParameter

MAX_GRAMMAR_CHARS = 64 * 1024
MAX_GRAMMAR_NESTING = 64


def grammar_nesting(grammar: str) -> int:
    """The deepest nesting of ( ) groups in GBNF text, outside "strings" and [character classes]."""
    depth = deepest = 0
    quote: str | None = None  # the character that closes the literal we are in
    escaped = False
    for ch in grammar:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch == '"':
            quote = '"'
        elif ch == "[":
            quote = "]"
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def check_grammar(grammar: str, what: str = "the grammar") -> None:
    """Refuse a grammar too large or too deeply nested for llama.cpp to run safely and fast."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidParameter(
            f"{what} is too large ({len(grammar)} characters of grammar; at most {MAX_GRAMMAR_CHARS}); "
            "use fewer enum values or properties, smaller minItems/maxItems, or less nesting"
        )
    if grammar_nesting(grammar) > MAX_GRAMMAR_NESTING:
        raise InvalidParameter(
            f"{what} nests groups deeper than {MAX_GRAMMAR_NESTING} levels; flatten it into named rules"
        )


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
