"""Bounds on a grammar that llama.cpp can run safely and fast, checked wherever SamplingParams are made,
and JSON schemas turned into grammars.

llama.cpp parses GBNF recursively (deep nesting overflows the stack of the process that parses it) and
checks every alternative of a grammar at every step (a 100,000-value enum stalls a slot). A schema is
checked by the grammar it becomes, so that a request is refused in the server's process before any runner
sees it; the conversion is llama-cpp-python's pure-Python one, run without loading llama.cpp.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from candor.errors import InvalidParameter

MAX_GRAMMAR_CHARS = 64 * 1024
MAX_GRAMMAR_NESTING = 64

# What llama.cpp's JSON-schema converter enforces, and keywords that only describe (safe to ignore).
ENFORCED = frozenset(
    {
        "$ref",
        "additionalProperties",
        "allOf",
        "anyOf",
        "const",
        "enum",
        "format",
        "items",
        "maxItems",
        "maxLength",
        "minItems",
        "minLength",
        "oneOf",
        "pattern",
        "prefixItems",
        "properties",
        "required",
        "type",
        "$defs",
        "definitions",
    }
)
DESCRIPTIVE = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "strict",
    }
)


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


def _keywords(schema: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (where, keyword) of a schema, walking its subschemas."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _keywords(item, f"{path}[{i}]")
        return
    if not isinstance(schema, Mapping):
        return
    for key, value in schema.items():
        yield path or "/", str(key)
        if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
            for name, sub in value.items():
                yield from _keywords(sub, f"{path}/{key}/{name}")
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems"):
            yield from _keywords(value, f"{path}/{key}")


# Bounds that llama.cpp's converter spells out one item at a time: a `maxLength: 200` becomes 200 nested
# optional groups, deeper than llama.cpp parses safely.
BOUNDS = frozenset({"maxLength", "minLength", "maxItems", "minItems", "pattern"})


def enforceable(schema: Any) -> Any:
    """A copy of a schema without the keywords llama.cpp's converter would not enforce: agents' tool
    schemas carry them (`minimum`, `format`...), and a forced call is still made to fit the rest. When
    the bounds (`maxLength`, `pattern`...) would make the grammar too deep or too large, they go too.
    Response formats keep refusing what is not enforced (check_schema)."""
    kept = _without(schema, frozenset())
    try:
        check_schema(kept)
    except InvalidParameter:
        return _without(schema, BOUNDS)
    return kept


def _without(schema: Any, dropped: frozenset[str]) -> Any:
    """A copy of a schema with only the enforced and descriptive keywords, less `dropped`."""
    if isinstance(schema, list):
        return [_without(item, dropped) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if (key not in ENFORCED and key not in DESCRIPTIVE) or key in dropped:
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
            kept[key] = {name: _without(sub, dropped) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems"):
            kept[key] = _without(value, dropped)
        else:
            kept[key] = value
    return kept


def check_schema(schema: Any, what: str = "the JSON schema") -> None:
    """Refuse, before any runner sees it, a schema whose keywords llama.cpp's converter would not enforce
    (rather than ignore them), or one too large or too deep to become a grammar llama.cpp runs safely."""
    if not isinstance(schema, Mapping):
        raise InvalidParameter(f"{what} must be a JSON object")
    if _depth(schema) > MAX_GRAMMAR_NESTING:
        raise InvalidParameter(f"{what} nests deeper than {MAX_GRAMMAR_NESTING} levels; use $defs and $ref")
    unenforced = sorted(
        {
            f"{key} (at {where})"
            for where, key in _keywords(schema)
            if key not in ENFORCED and key not in DESCRIPTIVE
        }
    )
    if unenforced:
        raise InvalidParameter(
            "these JSON-schema keywords would not be enforced while decoding, so candor refuses them rather "
            f"than ignore them: {', '.join(unenforced)}"
        )
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise InvalidParameter(f"{what} is not plain JSON") from None
    if len(text) > MAX_GRAMMAR_CHARS:
        raise InvalidParameter(
            f"{what} is too large ({len(text)} characters; at most {MAX_GRAMMAR_CHARS}); use fewer enum "
            "values or properties"
        )
    _grammar_of(text, what)


def schema_grammar(schema: Any, what: str = "the JSON schema") -> str:
    """A JSON schema -> GBNF, checked (see check_schema)."""
    check_schema(schema, what)
    return _grammar_of(json.dumps(schema, sort_keys=True), what)


@functools.lru_cache(maxsize=64)  # SamplingParams are copied with their schema; each copy checks it
def _grammar_of(schema_json: str, what: str) -> str:
    try:
        grammar = str(_converter()(schema_json))
    except (ValueError, KeyError, TypeError, RecursionError, AssertionError) as exc:
        raise InvalidParameter(f"{what} cannot be turned into a grammar: {exc}") from None
    check_grammar(grammar, f"{what}'s grammar")
    return grammar


@functools.cache
def _converter() -> Callable[[str], str]:
    """llama-cpp-python's json_schema_to_gbnf, from its file: importing the package would load llama.cpp."""
    spec = importlib.util.find_spec("llama_cpp")
    for folder in spec.submodule_search_locations or () if spec is not None else ():
        path = Path(folder) / "llama_grammar.py"
        source = importlib.util.spec_from_file_location("candor._schema_converter", path)
        if path.is_file() and source is not None and source.loader is not None:
            module = importlib.util.module_from_spec(source)
            source.loader.exec_module(module)
            convert: Callable[[str], str] = module.json_schema_to_gbnf
            return convert
    raise InvalidParameter(
        "llama-cpp-python's grammar module was not found, so JSON schemas cannot be used; reinstall it: "
        "pip install --force-reinstall llama-cpp-python"
    )


def _depth(value: Any) -> int:
    """How deep JSON nests, walked without recursion (a body may nest as deep as its parser allows)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest
