"""Size checks that run before a template operation that could build a huge value in one step.

Each check raises `Refused` (via the budget) when the result could pass the value limit, and may
return the arguments to use instead (an iterator materialized into a list so it can be measured).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from candor.prompt.budget import Refused, RenderBudget, measure

# One %-format conversion: %(key)flags width .precision length type.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)
_NUMBER = re.compile(r"\d+")

# Methods of builtin values that templates may call; anything else (str.translate, int.to_bytes,
# dict.fromkeys, ...) is treated as an unsafe attribute.
SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (
        str,
        frozenset(
            {
                "capitalize",
                "casefold",
                "center",
                "count",
                "endswith",
                "find",
                "format",
                "index",
                "isalnum",
                "isalpha",
                "isascii",
                "isdecimal",
                "isdigit",
                "islower",
                "isnumeric",
                "isspace",
                "istitle",
                "isupper",
                "join",
                "ljust",
                "lower",
                "lstrip",
                "partition",
                "removeprefix",
                "removesuffix",
                "replace",
                "rfind",
                "rindex",
                "rjust",
                "rpartition",
                "rsplit",
                "rstrip",
                "split",
                "splitlines",
                "startswith",
                "strip",
                "swapcase",
                "title",
                "upper",
                "zfill",
            }
        ),
    ),
    (dict, frozenset({"get", "items", "keys", "values"})),
    (list, frozenset({"count", "index"})),
    (tuple, frozenset({"count", "index"})),
)
BUILTIN_VALUE_TYPES = (str, bytes, int, float, complex, list, tuple, dict, set, frozenset, range)

Args = tuple[Any, ...]
FilterCheck = Callable[[RenderBudget, Any, Args, Mapping[str, Any]], Any]


def is_allowed_method(obj: object, name: str) -> bool:
    """Say whether a template may call method `name` of the builtin value `obj`."""
    for kind, names in SAFE_METHODS:
        if isinstance(obj, kind):
            return name in names
    return False


def _text_size(value: object, limit: int) -> int:
    """Estimate the length of str(value) (a string's length; else its measure)."""
    return len(value) if isinstance(value, str) else measure(value, limit)


def _arg(args: Args, kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_width(budget: RenderBudget, width: object, what: str, unit: str = "characters") -> None:
    if isinstance(width, int) and width > 0:
        budget.check_size(width, what, unit)


def _largest_arg(values: Iterable[Any], limit: int) -> int:
    return max((_text_size(v, limit) for v in values), default=0)


def percent_format_size(fmt: str, args: Any, limit: int) -> int:
    """Bound the length of `fmt % args` without running it."""
    values = args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else (args,)
    largest = _largest_arg(values, limit)
    size = len(fmt)
    for match in _PERCENT_SPEC.finditer(fmt):
        width, precision, kind = match.groups()
        if "*" in (width, precision):
            return limit + 1  # widths taken from the arguments: refuse rather than guess
        if kind != "%":
            size += largest + int(width or 0) + int(precision or 0)
        if size > limit:
            break
    return size


def brace_format_size(fmt: str, args: Args, kwargs: Mapping[str, Any], limit: int) -> int:
    """Bound the length of `fmt.format(*args, **kwargs)` without running it."""
    largest = _largest_arg((*args, *kwargs.values()), limit)
    size = len(fmt)
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        if spec and "{" in spec:
            return limit + 1  # nested replacement fields set widths from the arguments
        size += largest + sum(int(n) for n in _NUMBER.findall(spec or ""))
        if size > limit:
            break
    return size


def replace_size(text: str, old: object, new: object, count: object) -> int:
    """Bound the length of `text.replace(old, new, count)` without running it."""
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(text)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def check_binop(budget: RenderBudget, operator: str, left: Any, right: Any) -> None:
    """Refuse `left operator right` when its result would pass the limits."""
    limit = budget.limits.max_value
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            budget.check_int_bits(left.bit_length() + right.bit_length())
            return
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and times > 1 and isinstance(seq, (str, list, tuple)):
            if isinstance(seq, str):
                budget.check_size(len(seq) * times, "a string", "characters")
            else:
                budget.check_size(measure(seq, limit) * times, f"a {type(seq).__name__}")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            budget.check_int_bits(min(right, budget.limits.max_int_bits + 1) * left.bit_length())
    elif operator == "+":
        if isinstance(left, str) and isinstance(right, str):
            budget.check_size(len(left) + len(right), "a string", "characters")
        elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            budget.check_size(measure(left, limit) + measure(right, limit), "a list")
    elif operator == "%" and isinstance(left, str):
        budget.check_size(percent_format_size(left, right, limit), "a string", "characters")


def check_str_method(
    budget: RenderBudget, text: str, name: str, args: Args, kwargs: Mapping[str, Any]
) -> Args:
    """Refuse a str method call whose result would pass the limit; return the arguments to use."""
    limit = budget.limits.max_value
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(budget, _arg(args, kwargs, 0, "width", 0), "a padded string")
    elif name == "replace":
        old, new = _arg(args, kwargs, 0, "old", None), _arg(args, kwargs, 1, "new", None)
        budget.check_size(
            replace_size(text, old, new, _arg(args, kwargs, 2, "count", -1)), "a string", "characters"
        )
    elif name == "join" and args:
        items = list(args[0])
        budget.check_size(measure(items, limit) + len(text) * len(items), "a joined string", "characters")
        return (items, *args[1:])
    elif name == "format":
        budget.check_size(brace_format_size(text, args, kwargs, limit), "a formatted string", "characters")
    return args


def _check_join(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    items = list(value)
    sep = _arg(args, kwargs, 0, "d", "")
    limit = budget.limits.max_value
    budget.check_size(
        measure(items, limit) + _text_size(sep, limit) * len(items), "a joined string", "characters"
    )
    return items


def _check_materialized(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    items = list(value)
    budget.check_value(items)
    return items


def _check_measured(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    budget.check_value(value)
    return value


def _check_batch(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    count = _arg(args, kwargs, 0, "linecount", 0)
    if isinstance(count, int):
        budget.check_size(measure(value, budget.limits.max_value) + max(count, 0), "a list of batches")
    return value


def _check_slice(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    _check_width(budget, _arg(args, kwargs, 0, "slices", 0), "a list of slices", "items")
    return value


def _check_center(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    _check_width(budget, _arg(args, kwargs, 0, "width", 80), "a centered string")
    return value


def _check_indent(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    budget.check_size(step, "an indentation", "characters")
    if not isinstance(value, str):
        raise Refused(f"used the indent filter on a {type(value).__name__}; it needs a string")
    budget.check_size(len(value) + (value.count("\n") + 1) * max(step, 0), "an indented string", "characters")
    return value


def _check_format(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    fmt = value if isinstance(value, str) else ""
    budget.check_size(
        percent_format_size(fmt, kwargs or args, budget.limits.max_value), "a string", "characters"
    )
    return value


def _check_replace(budget: RenderBudget, value: Any, args: Args, kwargs: Mapping[str, Any]) -> Any:
    budget.check_value(value)
    text = value if isinstance(value, str) else str(value)
    old = _arg(args, kwargs, 0, "old", None)
    new = _arg(args, kwargs, 1, "new", None)
    count = _arg(args, kwargs, 2, "count", None)
    budget.check_size(replace_size(text, str(old), str(new), count), "a string", "characters")
    return value


# The filters templates may use, each with the check that runs before it (None: its result is never
# much bigger than its input, so checking the result afterwards is enough).
FILTER_CHECKS: Mapping[str, FilterCheck | None] = MappingProxyType(
    {
        "abs": None,
        "attr": None,
        "batch": _check_batch,
        "capitalize": None,
        "center": _check_center,
        "count": None,
        "d": None,
        "default": None,
        "dictsort": None,
        "e": None,
        "escape": None,
        "first": None,
        "float": None,
        "format": _check_format,
        "groupby": None,
        "indent": _check_indent,
        "int": None,
        "items": None,
        "join": _check_join,
        "last": None,
        "length": None,
        "list": None,
        "lower": None,
        "map": None,
        "max": None,
        "min": None,
        "reject": None,
        "rejectattr": None,
        "replace": _check_replace,
        "reverse": None,
        "round": None,
        "safe": None,
        "select": None,
        "selectattr": None,
        "slice": _check_slice,
        "sort": None,
        "string": _check_measured,
        "sum": _check_materialized,
        "title": None,
        "trim": None,
        "truncate": None,
        "unique": None,
        "upper": None,
        "wordcount": None,
    }
)
