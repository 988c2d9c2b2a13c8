"""Bounds on a grammar that llama.cpp can run safely and fast, checked wherever SamplingParams are made.

llama.cpp parses GBNF recursively (deep nesting overflows the stack of the process that parses it) and
checks every alternative of a grammar at every step (a 100,000-value enum stalls a slot).
"""

from __future__ import annotations

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
