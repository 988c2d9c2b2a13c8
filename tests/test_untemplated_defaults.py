"""A model without a chat template of its own answers with bounded defaults (Ollama's repeat penalty and
a token limit), each one overridable; raw completion, and every model with a template, keep llama.cpp's."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gguf_factory import write_tiny_llama

import candor
from candor.cli import build_parser, main
from candor.cli.chat_backends import LocalChat
from candor.cli.repl import ChatSession
from candor.cli.run import sampling_from
from candor.parameters import apply_options
from candor.prompt import choose_chat_format
from candor.scheduler import Scheduler
from candor.scheduler.scheduler import defaults_of
from candor.server.ollama.convert import parameters
from candor.store.registry import StoreEntry
from candor.types import SamplingParams

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
BOUNDED = {"num_predict": 256, "repeat_penalty": 1.1, "repeat_last_n": 64}
GEMMA_TOKENS = {"<start_of_turn>", "<end_of_turn>"}


@pytest.fixture(scope="module")
def templated_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that has a chat template of its own."""
    return write_tiny_llama(tmp_path_factory.mktemp("templated") / "templated.gguf", chat_template=TEMPLATE)


@pytest.fixture(scope="module")
def untemplated(tiny_model_path: Path) -> Iterator[candor.Model]:
    """The tiny model has no chat template: candor chats with it through a fallback format."""
    with candor.load(tiny_model_path, ctx=128, threads=1) as model:
        yield model


def bounded(params: SamplingParams) -> tuple[int | None, float, int]:
    return params.max_tokens, params.repeat_penalty, params.repeat_last_n


def test_only_a_fallback_format_carries_them() -> None:
    fallback = choose_chat_format(None, "gemma3", GEMMA_TOKENS)
    assert fallback.is_fallback and dict(fallback.options) == BOUNDED
    generic = choose_chat_format(None, "llama", set())
    assert dict(generic.options) == BOUNDED
    assert dict(choose_chat_format(TEMPLATE, "gemma3", GEMMA_TOKENS).options) == {}
    assert bounded(apply_options(SamplingParams(), fallback.options)) == (256, 1.1, 64)


def test_the_library_chats_with_them_and_completes_raw_without(
    untemplated: candor.Model, templated_path: Path
) -> None:
    assert untemplated.chat_format.is_fallback
    assert bounded(untemplated.chat_defaults) == (256, 1.1, 64)
    assert untemplated.defaults == SamplingParams()  # generate(): raw text, sampled as asked
    with candor.load(templated_path, ctx=128, threads=1) as model:
        assert model.chat_defaults == model.defaults == SamplingParams()


def test_the_librarys_chat_samples_with_the_penalty(untemplated: candor.Model) -> None:
    hello = [{"role": "user", "content": "hello the world"}]
    greedy = {"temperature": 0, "max_tokens": 48, "ignore_eos": True}
    plain = untemplated.chat(hello, stream=False, **greedy)
    penalised = untemplated.chat(
        hello, stream=False, params=untemplated.chat_defaults.with_overrides(**greedy)
    )
    unpenalised = untemplated.chat(hello, stream=False, repeat_penalty=1.0, **greedy)
    assert plain.tokens == penalised.tokens
    assert plain.tokens != unpenalised.tokens  # the tiny model repeats itself when nothing stops it
    assert plain.usage.completion_tokens == 48  # a keyword override wins over the default limit


def test_the_scheduler_gives_them_to_chat_only(tiny_model_path: Path, templated_path: Path) -> None:
    scheduler = Scheduler()
    try:
        assert bounded(scheduler.defaults(str(tiny_model_path), chat=True)) == (256, 1.1, 64)
        assert scheduler.defaults(str(tiny_model_path)) == SamplingParams()  # raw completion
        assert scheduler.defaults(str(templated_path), chat=True) == SamplingParams()
    finally:
        scheduler.close()


def test_a_names_parameters_then_a_requests_options_override_them() -> None:
    fmt = choose_chat_format(None, "gemma3", GEMMA_TOKENS)
    entry = StoreEntry(
        name="terse:latest",
        path="terse.gguf",
        size=1,
        sha256=None,
        source="file",
        parameters={"num_predict": 40, "repeat_penalty": 1.0},
    )
    named = defaults_of(entry, fmt)
    assert bounded(named) == (40, 1.0, 64)
    asked = apply_options(named, {"num_predict": -1, "repeat_last_n": 0})
    assert asked.max_tokens is None and asked.repeat_last_n == 0  # Ollama's -1: no limit


def test_the_cli_flags_override_them(untemplated: candor.Model) -> None:
    args = build_parser().parse_args(
        ["run", "hi", "--max-tokens", "-1", "--repeat-penalty", "1.0", "--repeat-last-n", "32"]
    )
    assert bounded(sampling_from(args, untemplated.chat_defaults)) == (None, 1.0, 32)
    unset = build_parser().parse_args(["run", "hi"])
    assert sampling_from(unset, untemplated.chat_defaults) == untemplated.chat_defaults


def test_set_parameter_in_the_chat_overrides_them(
    untemplated: candor.Model, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = LocalChat(untemplated)
    session = ChatSession(
        backend, backend.defaults(raw=False), system=None, raw=False, verbose=False, out=sys.stdout
    )
    session.command("/show parameters")
    shown = capsys.readouterr().out
    assert "num_predict        256" in shown and "repeat_penalty     1.1" in shown
    session.command("/set parameter num_predict -1")
    session.command("/set parameter repeat_penalty 1.0")
    assert session.params.max_tokens is None and session.params.repeat_penalty == 1.0
    session.command("/show info")
    assert "answer defaults: num_predict 256, repeat_penalty 1.1, repeat_last_n 64" in capsys.readouterr().out
    assert backend.defaults(raw=True) == SamplingParams()


def test_max_tokens_minus_one_lifts_a_limit() -> None:
    limited = SamplingParams(max_tokens=256)
    assert limited.with_overrides(max_tokens=-1).max_tokens is None
    assert limited.with_overrides(max_tokens=None).max_tokens == 256  # None keeps what was there
    assert SamplingParams(max_tokens=-2).max_tokens is None
    with pytest.raises(candor.InvalidParameter, match="-1 for no limit"):
        SamplingParams(max_tokens=0)


def test_show_says_so(
    tiny_model_path: Path, templated_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(tiny_model_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chat_format"]["defaults"] == BOUNDED
    assert main(["show", str(tiny_model_path)]) == 0
    text = capsys.readouterr().out
    assert "answer defaults   num_predict 256, repeat_penalty 1.1, repeat_last_n 64" in text
    assert "(no chat template of its own; chat only, not raw" in text
    assert main(["show", str(templated_path)]) == 0
    assert "answer defaults" not in capsys.readouterr().out


def test_api_show_parameters_list_them_after_the_stop_strings() -> None:
    fmt = choose_chat_format(None, "gemma3", GEMMA_TOKENS)
    text = parameters({**fmt.options, "stop": ["User:"]}, fmt.stop)
    assert text.splitlines() == [
        'stop "<end_of_turn>"',
        'stop "<start_of_turn>"',
        'stop "user\\n"',
        'stop "model\\n"',
        'stop "User:"',
        "num_predict 256",
        "repeat_penalty 1.1",
        "repeat_last_n 64",
    ]
    assert parameters({}, ()) == ""
