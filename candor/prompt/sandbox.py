"""Render untrusted jinja chat templates in a sandbox bounded in time, memory and output size.

GGUF files carry their chat template as jinja source, so a downloaded model is untrusted code
(CVE-2024-34359 was remote code execution through exactly this). Templates run in jinja2's
ImmutableSandboxedEnvironment, with only the globals and filters real templates use, and every
operation that can loop or build a large value is metered against a per-render `RenderBudget`:
loops, calls, filters, `*` `**` `%` `+` and `~`, collection literals and each `{{ output }}`.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import FILTERS
from jinja2.parser import Parser
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context
from jinja2.visitor import NodeTransformer

from candor.errors import TemplateError
from candor.prompt import guards
from candor.prompt.budget import Refused, RenderBudget, RenderLimits

__all__ = ["MAX_TEMPLATE_CHARS", "RenderLimits", "render_template"]

MAX_TEMPLATE_CHARS = 1_000_000  # real chat templates are a few kB; tool-heavy ones tens of kB
MAX_RANGE = 100_000  # items in one range(); jinja2's own sandbox allows the same
MIN_JINJA2 = (3, 1, 6)  # earlier versions have sandbox escapes
_BUDGET_KEY = "candor.budget"  # not an identifier, so no template can read or shadow it
_DETAIL_CHARS = 300  # how much of an underlying error message to quote


def _budget(context: Context) -> RenderBudget:
    budget = context.parent.get(_BUDGET_KEY)
    if not isinstance(budget, RenderBudget):
        raise Refused("was rendered without a budget (a bug in candor)")
    return budget


class _MeteredIterable:
    """An iterable that charges the render budget for each item a loop takes from it."""

    __slots__ = ("_budget", "_cost", "_items")

    def __init__(self, items: Iterable[Any], budget: RenderBudget, cost: int) -> None:
        self._items = items
        self._budget = budget
        self._cost = cost

    def __len__(self) -> int:
        return len(self._items)  # type: ignore[arg-type]  # TypeError for iterators, as jinja expects

    def __iter__(self) -> Iterator[Any]:
        budget, cost = self._budget, self._cost
        for item in self._items:
            budget.tick()
            if cost:
                budget.charge(cost)
            yield item


# Helpers the compiled template calls; the AST rewrite below inserts the calls.
def _metered_loop(context: Context, items: Iterable[Any], literal_chars: int) -> _MeteredIterable:
    return _MeteredIterable(items, _budget(context), literal_chars)


def _checked_literal(context: Context, value: Any) -> Any:
    budget = _budget(context)
    budget.tick()
    budget.check_value(value, "a collection")
    budget.charge(len(value))
    return value


def _checked_concat(context: Context, parts: tuple[Any, ...]) -> str:
    budget = _budget(context)
    budget.tick()
    texts = []
    size = 0
    for part in parts:
        if not isinstance(part, str):
            budget.check_value(part)
            part = str(part)
        size += len(part)
        budget.check_size(size, "a string", "characters")
        texts.append(part)
    budget.charge(size)
    return "".join(texts)


_JINJA_CALL_KWARGS = frozenset({"_loop_vars", "_block_vars"})  # jinja2 passes these to every call
_HELPERS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {
        "candor_loop": _metered_loop,
        "candor_literal": _checked_literal,
        "candor_concat": _checked_concat,
    }
)


class _Meter(NodeTransformer):
    """Rewrite a parsed template so loops, collection literals and `~` go through the helpers."""

    def __init__(self, environment: jinja2.Environment) -> None:
        self.environment = environment

    def _new(self, node: nodes.Node, like: nodes.Node) -> nodes.Node:
        node.set_lineno(like.lineno)
        node.set_environment(self.environment)
        return node

    def _helper(self, name: str, like: nodes.Node, *args: nodes.Node) -> nodes.Node:
        return self._new(nodes.Call(nodes.EnvironmentAttribute(name), list(args), [], None, None), like)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        literal = sum(len(data.data) for stmt in node.body for data in stmt.find_all(nodes.TemplateData))
        node.iter = self._helper("candor_loop", node, node.iter, self._new(nodes.Const(literal), node))
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._helper("candor_concat", node, self._new(nodes.Tuple(node.nodes, "load"), node))

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return self._helper("candor_literal", node, node)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._literal(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._literal(node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._literal(node) if node.ctx == "load" else self.generic_visit(node)


class _MeteredCodeGenerator(CodeGenerator):
    """Compile templates after the `_Meter` rewrite."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        super().visit_Template(_Meter(self.environment).visit(node), frame)


class _GenerationTag(Extension):
    """Accept HF's `{% generation %}...{% endgeneration %}` (training masks) and render its body."""

    tags = {"generation"}  # noqa: RUF012  # jinja2's Extension declares it a plain set

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    budget = _budget(context)
    budget.tick()
    if not isinstance(value, str):
        if isinstance(value, jinja2.Undefined):
            return value  # renders as "" (or raises, for a SecurityError placeholder)
        budget.check_value(value)
        value = str(value)
    budget.check_size(len(value), "an output string", "characters")
    budget.charge(len(value))
    return value


@pass_context
def _raise_exception(context: Context, message: Any) -> NoReturn:
    raise Refused(f"rejected these messages: {str(message)[:_DETAIL_CHARS]}")


@pass_context
def _strftime_now(context: Context, fmt: Any) -> str:
    if not isinstance(fmt, str) or len(fmt) > 256:
        raise Refused("called strftime_now() without a short format string")
    return datetime.now().strftime(fmt)


@pass_context
def _range(context: Context, *args: Any) -> range:
    try:
        result = range(*args)
        size = len(result)
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise Refused(f"called range() for more than {MAX_RANGE:,} numbers")
    return result


@pass_context
def _tojson(
    context: Context,
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Serialize like HF transformers' tojson (plain JSON, not jinja2's HTML-safe kind), metered."""
    budget = _budget(context)
    step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if step > 64:
        raise Refused(f"asked tojson for an indent of {step} (at most 64)")
    encoder = json.JSONEncoder(
        ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    chunks = []
    size = 0
    for chunk in encoder.iterencode(value):  # pure-Python encoder: metered chunk by chunk
        budget.tick()
        size += len(chunk)
        budget.check_size(size, "JSON text", "characters")
        chunks.append(chunk)
    budget.charge(size)
    return "".join(chunks)


def _metered_filter(func: Callable[..., Any], check: guards.FilterCheck | None) -> Callable[..., Any]:
    """Wrap one of jinja2's filters with a check before it and an accounting after it."""
    passes = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @pass_context
    def metered(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(context)
        budget.tick()
        if check is not None:
            value = check(budget, value, args, kwargs)
        if passes == "context":
            result = func(context, value, *args, **kwargs)
        elif passes == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif passes == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        budget.account(result)
        return result

    metered.__name__ = metered.__qualname__ = getattr(func, "__name__", "filter")
    return metered


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, metered, with only what HF-style chat templates need."""

    intercepted_binops = frozenset({"+", "*", "%", "**"})
    code_generator_class = _MeteredCodeGenerator

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[loopcontrols, _GenerationTag],
            finalize=_finalize,
        )
        for name, helper in _HELPERS.items():
            setattr(self, name, helper)
        self.globals = {
            "range": _range,
            "dict": dict,
            "namespace": Namespace,
            "raise_exception": _raise_exception,
            "strftime_now": _strftime_now,
        }
        self.filters = {
            name: _metered_filter(FILTERS[name], check) for name, check in guards.FILTER_CHECKS.items()
        }
        self.filters["tojson"] = _tojson

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Allow what jinja2's sandbox allows, except methods of builtin values not on the list."""
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if callable(value) and isinstance(obj, guards.BUILTIN_VALUE_TYPES):
            return guards.is_allowed_method(obj, attr)
        # Nor methods of the builtin types themselves: dict.fromkeys, str.maketrans, int.from_bytes, ...
        return not (callable(value) and isinstance(obj, type) and issubclass(obj, guards.BUILTIN_VALUE_TYPES))

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """Refuse an unsafe attribute at once (jinja2 returns a placeholder that may print as '')."""
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Sandbox str.format as jinja2 does; leave str.format_map to the method list (refused)."""
        if getattr(value, "__name__", None) == "format_map":
            return None
        return super().wrap_str_format(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Run an arithmetic operator after checking the size of its result."""
        budget = _budget(context)
        budget.tick()
        guards.check_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        budget.account(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call a function or method from template code, metered."""
        if any(obj is helper for helper in _HELPERS.values()):
            return obj(context, *args)  # our own rewrite's call; jinja's loop/block kwargs don't apply
        budget = _budget(context)
        budget.tick()
        if isinstance(obj, LoopContext) and args:  # a recursive loop's loop(children)
            args = (_MeteredIterable(args[0], budget, 0), *args[1:])
        method = getattr(obj, "__wrapped__", obj)  # jinja2 wraps str.format in a sandboxed function
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str) and isinstance(method, (types.BuiltinMethodType, types.MethodType)):
            public = {k: v for k, v in kwargs.items() if k not in _JINJA_CALL_KWARGS}
            args = guards.check_str_method(budget, owner, method.__name__, args, public)
        result = super().call(context, obj, *args, **kwargs)
        budget.account(result)
        return result


def _jinja2_version() -> tuple[int, ...]:
    try:
        text = version("jinja2")
    except PackageNotFoundError:
        text = jinja2.__version__
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@functools.lru_cache(maxsize=1)
def _environment() -> _SandboxEnvironment:
    found = _jinja2_version()
    if found < MIN_JINJA2:
        wanted = ".".join(map(str, MIN_JINJA2))
        raise TemplateError(
            f"jinja2 {'.'.join(map(str, found))} has known sandbox escapes, so candor will not run chat "
            f"templates with it; run: pip install 'jinja2>={wanted}'"
        )
    return _SandboxEnvironment()


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def render_template(
    source: str,
    variables: Mapping[str, Any],
    *,
    origin: str,
    remedy: str,
    limits: RenderLimits | None = None,
) -> str:
    """Render untrusted jinja source in the metered sandbox.

    Args:
        source: the template's jinja source.
        variables: the names the template sees (messages, add_generation_prompt, ...).
        origin: who wrote the template, for error messages ("the model's chat template").
        remedy: what the user can do when it fails, appended to error messages.
        limits: bounds on time, value sizes and output; RenderLimits() when None.

    Returns:
        The rendered text.

    Raises:
        TemplateError: the template has a syntax error, raised an error, tried to leave the
            sandbox, or passed a limit.
    """
    limits = limits or RenderLimits()
    try:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise Refused(f"is {len(source):,} characters long (candor accepts up to {MAX_TEMPLATE_CHARS:,})")
        template = _compile(source)
        budget = RenderBudget(limits)
        pieces = []
        size = 0
        for piece in template.generate({**variables, _BUDGET_KEY: budget}):
            size += len(piece)
            if size > limits.max_output:
                raise Refused(f"produced more than {limits.max_output:,} characters")
            pieces.append(piece)
        return "".join(pieces)
    except TemplateError:
        raise
    except Refused as exc:
        raise TemplateError(f"{origin} {exc}; {remedy}") from None
    except SecurityError as exc:
        raise TemplateError(f"{origin} tried to leave its sandbox ({_detail(exc)}); {remedy}") from None
    except jinja2.TemplateSyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""
        raise TemplateError(f"{origin} has a syntax error{where}: {_detail(exc)}; {remedy}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{origin} failed: {_detail(exc)}; {remedy}") from None
    except RecursionError:
        raise TemplateError(f"{origin} recursed too deeply and was stopped; {remedy}") from None
    except MemoryError:
        raise TemplateError(f"{origin} ran out of memory; {remedy}") from None
    except Exception as exc:  # any other error inside untrusted template code is the template's
        raise TemplateError(f"{origin} failed: {type(exc).__name__}: {_detail(exc)}; {remedy}") from None
