"""SamplingParams validation and the small value types."""

from __future__ import annotations

import pytest

from candor import InvalidParameter, Message, SamplingParams
from candor.types import Timings, Usage


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("top_k", 1.5),
        ("top_p", 1.5),
        ("min_p", -0.01),
        ("typical_p", 2),
        ("repeat_penalty", -1),
        ("repeat_last_n", -2),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", True),
        ("max_tokens", 0),
        ("max_tokens", -5),
        ("max_tokens", "10"),
        ("stop", ("",)),
        ("stop", (3,)),
    ],
)
def test_out_of_range_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(InvalidParameter, match=field):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


def test_defaults_follow_llama_cpp_and_overrides_apply() -> None:
    params = SamplingParams()
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.8, 40, 0.95, 0.05)
    assert params.repeat_penalty == 1.0 and not params.greedy
    changed = params.with_overrides(temperature=0, max_tokens=7, seed=None)
    assert changed.greedy and changed.max_tokens == 7 and changed.seed is None
    assert SamplingParams(stop="###").stop == ("###",)


def test_unknown_override_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidParameter, match="tempreature"):
        SamplingParams().with_overrides(tempreature=0.1)


def test_message_coercion() -> None:
    assert Message.coerce({"role": "user", "content": "hi"}) == Message("user", "hi")
    assert Message.coerce({"role": "assistant", "content": None}) == Message("assistant", "")
    with pytest.raises(InvalidParameter):
        Message.coerce({"content": "no role"})
    with pytest.raises(InvalidParameter):
        Message.coerce({"role": "user", "content": ["parts"]})


def test_rates() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=11)
    timings = Timings(prompt_seconds=0.5, decode_seconds=2.0)
    assert timings.prompt_tokens_per_second(usage) == 200
    assert timings.decode_tokens_per_second(usage) == 5  # 10 tokens after the first, in 2 s
    assert usage.total_tokens == 111


def test_a_grammar_nested_too_deep_for_llama_cpp_is_refused_everywhere() -> None:
    from candor.grammar_limits import MAX_GRAMMAR_NESTING

    deep = "root ::= " + "(" * (MAX_GRAMMAR_NESTING + 1) + '"a"' + ")" * (MAX_GRAMMAR_NESTING + 1)
    with pytest.raises(InvalidParameter, match="nests"):
        SamplingParams(grammar=deep)
    SamplingParams(grammar='root ::= "(" [()]* ")"')  # parentheses inside literals and classes are text


def test_ollama_seed_minus_one_means_random() -> None:
    from candor.parameters import apply_options

    assert apply_options(SamplingParams(seed=5), {"seed": -1}).seed is None
    assert apply_options(SamplingParams(), {"seed": 7}).seed == 7
