"""The template sandbox: escapes are refused, runaway templates stop fast, real features work."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from candor.errors import TemplateError
from candor.prompt import RenderLimits, render_template, sandbox
from candor.prompt.budget import measure

ORIGIN = "the model's chat template"
REMEDY = "pass --raw"


def render(
    source: str, variables: Mapping[str, Any] | None = None, limits: RenderLimits | None = None
) -> str:
    return render_template(source, variables or {}, origin=ORIGIN, remedy=REMEDY, limits=limits)


def refusal(
    source: str, variables: Mapping[str, Any] | None = None, limits: RenderLimits | None = None
) -> str:
    """Render a template that must fail; return the error message."""
    with pytest.raises(TemplateError) as caught:
        render(source, variables, limits)
    message = str(caught.value)
    assert message.startswith(ORIGIN + " ")
    assert message.endswith("; " + REMEDY)
    return message


# -- sandbox escapes -----------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.parent }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(namespace) }}",
    "{{ '{0[__class__]}'.format('') }}",
    "{{ 'abc'.format_map({}) }}",
    "{{ ''|attr('__class__') }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ strftime_now.__globals__['__builtins__'] }}",
    "{{ range.__globals__ }}",
    "{{ dict.mro() }}",
    "{{ dict.fromkeys(range(10)) }}",
    "{{ ''.join.__self__.__class__ }}",
    "{{ messages.append(1) }}",
    "{{ ({}).update(a=1) }}",
    "{{ (1).to_bytes(10, 'big') }}",
    "{{ 'a'.translate({97: 'b'}) }}",
    "{{ 'a'.encode() }}",
    "{{ loop.__class__ }}{% for x in [1] %}{{ loop.__class__ }}{% endfor %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused(source: str) -> None:
    message = refusal(source, {"messages": []})
    assert "tried to leave its sandbox" in message


UNDEFINED_HELPERS = [
    "{{ config.items() }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ request.application.__globals__ }}",
    "{{ cycler() }}",
    "{{ joiner() }}",
    "{{ url_for.__globals__ }}",
]


@pytest.mark.parametrize("source", UNDEFINED_HELPERS)
def test_flask_and_jinja_helpers_are_not_there(source: str) -> None:
    assert "is undefined" in refusal(source)


def test_unknown_names_render_nothing() -> None:
    assert render("[{{ request }}{{ config }}{{ lipsum }}{{ cycler }}{{ joiner }}{{ os }}]") == "[]"


@pytest.mark.parametrize(
    "source",
    ["{% include 'other' %}", "{% extends 'base' %}", "{% import 'os' as os %}", "{% from 'x' import y %}"],
)
def test_templates_cannot_load_other_templates(source: str) -> None:
    refusal(source)


def test_the_render_budget_is_out_of_reach() -> None:
    assert render("[{{ candor }}{{ budget }}]") == "[]"
    refusal("{{ self._TemplateReference__context['candor.budget'] }}")


# -- runaway templates ---------------------------------------------------------------------------------


def stopped_fast(source: str, variables: Mapping[str, Any] | None = None) -> str:
    """Render a runaway template; it must fail within about a second (with slack for slow machines)."""
    started = time.monotonic()
    message = refusal(source, variables)
    assert time.monotonic() - started < 3.0, message
    return message


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set l = [0] * 100000 %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
        "{% set l = [0] * 100000 %}{% for a in l %}{% for b in l if b > 5 %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% if loop.index > 0 %}{% continue %}"
        "{% endif %}{% endfor %}{% endfor %}",
    ],
)
def test_endless_loops_stop_at_the_deadline(source: str) -> None:
    assert "ran for more than 1 s" in stopped_fast(source)


@pytest.mark.parametrize(
    "source",
    [
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% macro f(x) %}{{ f(x ~ 'a') }}{% endmacro %}{{ f('') }}",
        "{% for x in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}",
        "{% block a %}{{ self.a() }}{% endblock %}",
    ],
)
def test_unbounded_recursion_is_stopped(source: str) -> None:
    assert "recursed too deeply" in stopped_fast(source)


AMPLIFIERS = [
    "{{ 'a' * 10**10 }}",
    "{{ 'x' * 99999 * 99999 }}",
    "{{ 10**10 * 'a' }}",
    "{{ [1, 2, 3] * 10**9 }}",
    "{{ 2 ** (10 ** 9) }}",
    "{{ (10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000) * (10 ** 1000) }}",
    "{{ range(10**9) | list }}",
    "{{ range(10**30) | length }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%.999999999f' % 1.5 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:{}}'.format(1, 999999999) }}",
    "{% set s = 'x' * 100000 %}{{ ('{0}' * 100).format(s) }}",
    "{% set s = 'x' * 100000 %}{{ ('%(a)s' * 100) % {'a': s} }}",
    "{{ 'x' | center(10**10) }}",
    "{{ 'x'.ljust(10**10) }}",
    "{{ 'x'.zfill(10**10) }}",
    "{{ ('a\\n' * 100000) | indent(1000) }}",
    "{{ 'a' | indent(10**10) }}",
    "{{ [1] | batch(10**10, 0) | list }}",
    "{{ [1, 2] | slice(10**10) | list }}",
    "{{ '%999999999s' | format(1) }}",
    "{% set s = 'a' * 1000000 %}{{ s.replace('a', 'bbb') }}",
    "{% set s = 'a' * 1000000 %}{{ s | replace('a', 'bbb') }}",
    "{% set s = 'a' * 1000 %}{{ s.replace('', s) }}",
    "{% set l = [''] * 1000000 %}{{ l | join('x' * 1000) }}",
    "{% set l = [''] * 1000000 %}{{ ('x' * 1000).join(l) }}",
    "{% set l = [''] * 100000 %}{{ ('x' * 100).join(l | map('string')) }}",
    "{{ ['x'] | map('center', 10**10) | list }}",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{% set ns = namespace(t=1) %}{% for i in range(60) %}{% set ns.t = (ns.t, ns.t) %}{% endfor %}"
    "{{ {ns.t: 1} }}",
    "{% set ns = namespace(d=1) %}"
    "{% for i in range(60) %}{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}",
    "{% set a = [1] * 100000 %}{% set b = [1] * 100000 %}{{ [a] * 100000 == [b] * 100000 }}",
    "{% set a = ['x' * 1000] * 1000 %}{% set ns = namespace(a=a, b=a, c=a) %}{{ ns | string }}",
    "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
    "{{ [1] | tojson(indent=10**9) }}",
    "{% set a = ['\"' * 100000] * 15 %}{{ a | tojson }}",
    "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "{% set x %}{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}{% endset %}",
    "{% macro f() %}{% for i in range(100000) %}"
    + "x" * 1000
    + "{% endfor %}{% endmacro %}{% set x = f() %}",
    "{% set s = 'x' * 1000000 %}{% for i in range(100) %}{% set t = s.upper() %}{% endfor %}",
]


@pytest.mark.parametrize("source", AMPLIFIERS)
def test_huge_values_are_refused_before_they_are_built(source: str) -> None:
    message = stopped_fast(source)
    assert any(
        words in message
        for words in (
            "tried to build",
            "tried to compute",
            "numbers",
            "produced more",
            "created more",
            "indent",
        )
    ), message


@pytest.mark.parametrize("source", AMPLIFIERS)
def test_refused_templates_never_hold_much_memory(source: str) -> None:
    tracemalloc.start()  # slows Python down, so the deadline may be what stops some of these here
    try:
        with pytest.raises(TemplateError):
            render(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20


def test_the_limits_are_configurable() -> None:
    small = RenderLimits(max_output=10, max_value=100, max_created=1000, max_seconds=5)
    assert "produced more than 10 characters" in refusal("{{ 'x' * 11 }}", limits=small)
    assert "tried to build a string of 101 characters" in refusal("{{ 'x' * 101 }}", limits=small)
    assert render("{{ 'x' * 10 }}", limits=small) == "x" * 10


def test_a_long_template_is_refused_before_compiling() -> None:
    assert "characters long" in refusal("x" * (sandbox.MAX_TEMPLATE_CHARS + 1))


def test_deeply_nested_expressions_are_refused() -> None:
    refusal("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")


# -- ordinary template errors --------------------------------------------------------------------------


def test_syntax_errors_name_the_line() -> None:
    message = refusal("hello\n{% if %}")
    assert message.startswith(f"{ORIGIN} has a syntax error at line 2: ")


def test_unknown_filters_are_errors() -> None:
    assert "No filter named 'pprint'" in refusal("{{ messages | pprint }}")


def test_calling_an_undefined_name_is_an_error() -> None:
    assert "'foo' is undefined" in refusal("{{ foo() }}")


def test_raise_exception_carries_the_templates_message() -> None:
    assert f"{ORIGIN} rejected these messages: roles must alternate; " in refusal(
        "{{ raise_exception('roles must alternate') }}"
    )


def test_python_errors_inside_templates_are_template_errors() -> None:
    assert "ZeroDivisionError" in refusal("{{ 1 // 0 }}")
    assert "TypeError" in refusal("{{ 'a' + 1 }}")


def test_an_old_jinja2_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_jinja2_version", lambda: (3, 1, 5))
    sandbox._environment.cache_clear()
    sandbox._compile.cache_clear()
    try:
        with pytest.raises(TemplateError, match=r"pip install 'jinja2>=3\.1\.6'"):
            render("{{ 1 }}")
    finally:
        monkeypatch.undo()
        sandbox._environment.cache_clear()
        sandbox._compile.cache_clear()


# -- what real templates use ---------------------------------------------------------------------------


def test_hf_trims_blocks_and_strips_their_indentation() -> None:
    assert render("{% if true %}\n    a\n{% endif %}\nb") == "    a\nb"
    assert render("    {% if true %}x{% endif %}") == "x"


def test_loop_controls() -> None:
    source = (
        "{% for x in range(10) %}{% if x == 1 %}{% continue %}{% endif %}"
        "{% if x > 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"
    )
    assert render(source) == "023"


def test_string_methods_and_namespace() -> None:
    source = (
        "{% set ns = namespace(found=false, parts=[]) %}"
        "{% for m in messages %}{% if m.content.startswith('/') %}{% set ns.found = true %}{% endif %}"
        "{% endfor %}"
        "{{ ns.found }}|{{ '  a b  '.strip() }}|{{ 'a,b'.split(',') | join('+') }}|"
        "{{ 'x</think>y'.split('</think>')[-1].lstrip() }}|{{ ' t ' | trim }}|{{ 'abc'.replace('b', 'B') }}|"
        "{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}{{ 'hi'.title() }}|{{ 'a-b'.rsplit('-', 1)[0] }}|"
        "{{ 'x'.center(5) }}|{{ '%s=%d' % ('n', 3) }}|{{ '{}+{}'.format(1, 2) }}|{{ '%s!' | format('yo') }}"
    )
    assert render(source, {"messages": [{"role": "user", "content": "/help"}]}) == (
        "True|a b|a+b|y|t|aBc|HIhiHi|a|  x  |n=3|1+2|yo!"
    )


def test_tojson_is_hf_style() -> None:
    value = {"b": "é<tag>&'", "a": [1, None, True]}
    assert render("{{ v | tojson }}", {"v": value}) == '{"b": "é<tag>&\'", "a": [1, null, true]}'
    assert render("{{ v | tojson(ensure_ascii=True, sort_keys=True) }}", {"v": value}) == (
        '{"a": [1, null, true], "b": "\\u00e9<tag>&\'"}'
    )
    assert render("{{ v | tojson(indent=2) }}", {"v": {"a": 1}}) == '{\n  "a": 1\n}'
    assert render("{{ v | tojson(separators=(',', ':')) }}", {"v": {"a": [1, 2]}}) == '{"a":[1,2]}'


def test_strftime_now_formats_the_current_time() -> None:
    year = time.strftime("%Y")
    assert render("{{ strftime_now('%Y') }}") in (year, time.strftime("%Y"))
    assert "short format string" in refusal("{{ strftime_now('%Y' * 1000) }}")


def test_collection_filters_and_tests() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "user", "content": "v"},
    ]
    source = (
        "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}|"
        "{{ messages | rejectattr('role', 'eq', 'user') | list | length }}|"
        "{{ messages | map(attribute='role') | unique | list }}|"
        "{{ {'b': 1, 'a': 2} | dictsort }}|{{ messages[0].items() | list | length }}|"
        "{{ messages | first | attr('get') is defined }}|{{ messages | last }}|"
        "{{ [3, 1, 2] | sort | reverse | list }}|"
        "{{ [1, 2, 3] | sum }}|{{ [1, 2, 3] | batch(2) | list }}|{{ 'abc' | list }}|"
        "{{ messages is sequence }}|"
        "{{ 'u' in messages | map(attribute='content') }}|{{ dict(a=1) }}|{{ 3.7 | int }}|"
        "{{ 'x' | default('y') }}"
    )
    assert render(source, {"messages": messages}) == (
        "u,v|1|['system', 'user']|[('a', 2), ('b', 1)]|2|True|{'role': 'user', 'content': 'v'}|[3, 2, 1]|"
        "6|[[1, 2], [3]]|['a', 'b', 'c']|True|True|{'a': 1}|3|x"
    )


def test_loop_helpers_and_bounded_recursion() -> None:
    source = (
        "{% for x in 'abc' %}{{ loop.index }}{{ loop.cycle('+', '-') }}{% if loop.last %}!{% endif %}"
        "{% endfor %}|"
        "{% macro depth(n) %}{% if n > 0 %}{{ depth(n - 1) }}{% else %}bottom{% endif %}{% endmacro %}"
        "{{ depth(20) }}|"
        "{% for node in tree recursive %}{{ node.name }}"
        "{% if node.children %}({{ loop(node.children) }}){% endif %}"
        "{% endfor %}"
    )
    tree = [{"name": "a", "children": [{"name": "b", "children": []}, {"name": "c"}]}]
    assert render(source, {"tree": tree}) == "1+2-3+!|bottom|a(bc)"


def test_generation_blocks_render_their_body() -> None:
    assert render("{% generation %}{{ 'answer' }}{% endgeneration %}.") == "answer."


def test_compiled_templates_are_cached() -> None:
    source = "{{ 'cached' }} {{ n }}"
    render(source, {"n": 1})
    hits = sandbox._compile.cache_info().hits
    assert render(source, {"n": 2}) == "cached 2"
    assert sandbox._compile.cache_info().hits == hits + 1


def test_large_legitimate_conversations_render() -> None:
    source = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>{% endfor %}"
    messages = [{"role": "user", "content": "word " * 100} for _ in range(1_500)]
    text = render(source, {"messages": messages})
    assert len(text) == 1_500 * (len("<user></user>") + len("word " * 100) - 1)


# -- the measure the limits rely on --------------------------------------------------------------------


def test_measure_counts_shared_parts_each_time_and_stops_early() -> None:
    inner = ["x" * 10] * 10
    assert measure(inner, 10**9) == 1 + 10 * 11
    assert measure([inner] * 1000, 10**9) == 1 + 1000 * 111
    shared: Any = [1]
    for _ in range(200):  # 2**200 leaves through shared references, walked once each
        shared = [shared, shared]
    started = time.monotonic()
    assert measure(shared, 10**6) > 10**6
    assert time.monotonic() - started < 0.5


def test_measure_counts_a_value_that_contains_itself_as_too_big() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    assert measure(looped, 100) > 100


def endless() -> Iterator[int]:
    while True:
        yield 1


def test_measure_does_not_consume_iterators() -> None:
    assert measure(endless(), 10) == 1
