"""A chat format's turn markers end the answer, whether the model writes them as control tokens (which
render as nothing), as plain text, or (what the default model does) as a stray word followed by the role
line: real llama.cpp tokenizing with a tiny model's vocabulary, the tokens chosen by the test where a base
model would sample them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from gguf_factory import write_tiny_llama

from candor.engine import NativeModel
from candor.engine.textout import TextOut
from candor.prompt import fallback_format
from candor.types import Chunk, FinishReason, SamplingParams

GEMMA_STOPS = fallback_format("gemma").stop


@pytest.fixture(scope="module")
def gemma_vocab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeModel]:
    """A tiny model whose vocabulary has Gemma's turn tokens (as control tokens) and one other."""
    path = write_tiny_llama(
        tmp_path_factory.mktemp("turns") / "turns.gguf",
        extra_tokens=["<start_of_turn>", "<end_of_turn>", "<other>"],
    )
    model = NativeModel(path)
    yield model
    model.close()


def control(model: NativeModel, text: str) -> int:
    (token,) = model.tokenize(text, add_special=False, parse_special=True)
    assert model.piece(token) == b""  # a control token: it renders as nothing
    return token


def words(model: NativeModel, text: str) -> list[int]:
    return model.tokenize(text, add_special=False, parse_special=False)


def rendered(model: NativeModel, tokens: Sequence[int]) -> str:
    """The text the tokens stream as, piece by piece (control tokens add nothing)."""
    return b"".join(model.piece(t) for t in tokens).decode()


def feed(
    model: NativeModel, tokens: Sequence[int], stops: Sequence[str], params: SamplingParams | None = None
) -> tuple[str, list[Chunk], TextOut]:
    """Give TextOut the tokens one by one, as the generation loop does, until it says the answer ended."""
    out = TextOut(model, params or SamplingParams(), stops)
    chunks = []
    for token in tokens:
        chunk = out.accept(token)
        if chunk is not None:
            chunks.append(chunk)
        if out.finish is not None:
            break
    chunks.append(out.final(prompt_tokens=3))
    return "".join(c.text for c in chunks), chunks, out


def test_the_gemma_marker_as_a_control_token_ends_the_answer(gemma_vocab: NativeModel) -> None:
    # What the default model does: `<start_of_turn>` (shown as nothing) then "user\n" and a new turn.
    answer = words(gemma_vocab, "hello world")
    tokens = [*answer, control(gemma_vocab, "<start_of_turn>"), *words(gemma_vocab, "user\nthe")]
    text, chunks, out = feed(gemma_vocab, tokens, GEMMA_STOPS)
    assert text == rendered(gemma_vocab, answer)
    assert "user" not in text
    assert out.finish is FinishReason.STOP
    last = chunks[-1]
    assert last.finish_reason is FinishReason.STOP and last.usage is not None
    assert last.usage.completion_tokens == len(answer)  # the marker is not part of the answer
    assert [t for c in chunks for t in c.tokens] == answer


def test_the_gemma_marker_as_plain_text_ends_the_answer(gemma_vocab: NativeModel) -> None:
    answer = words(gemma_vocab, "hello world")
    tokens = [*answer, *words(gemma_vocab, "<start_of_turn>user\nthe")]
    text, _, out = feed(gemma_vocab, tokens, GEMMA_STOPS)
    assert text.rstrip() == rendered(gemma_vocab, answer)  # the tokenizer puts a space before "<"
    assert out.finish is FinishReason.STOP


def test_the_role_line_after_a_stray_word_ends_the_answer(gemma_vocab: NativeModel) -> None:
    # What the default model really does: its turn markers' logits are far below any word's, so it writes
    # a stray word where a marker belongs, then the role line ("...blue? mendatanguser\n"): both go.
    for role in ("user", "model"):
        tokens = words(gemma_vocab, f"hello world. xyz{role}\nthe world")
        text, _, out = feed(gemma_vocab, tokens, GEMMA_STOPS)
        assert text.strip() == "hello world." and out.finish is FinishReason.STOP  # the stray word too
        text, _, out = feed(gemma_vocab, words(gemma_vocab, f"hello\n{role}\nthe"), GEMMA_STOPS)
        assert text.strip() == "hello" and out.finish is FinishReason.STOP


def test_a_role_word_in_the_answers_own_words_does_not_end_it(gemma_vocab: NativeModel) -> None:
    tokens = words(gemma_vocab, "ask the user\nand the model\nthe end")
    text, _, out = feed(gemma_vocab, tokens, GEMMA_STOPS)
    assert text == rendered(gemma_vocab, tokens) and out.finish is None


def test_a_control_token_stop_keeps_text_held_for_a_plain_stop(gemma_vocab: NativeModel) -> None:
    # "<s" might begin "<start_of_turn>" written out, so it is held back; the control token ends the
    # answer and the held text was answer after all.
    answer = words(gemma_vocab, "hello <s")
    text, _, out = feed(gemma_vocab, [*answer, control(gemma_vocab, "<start_of_turn>")], GEMMA_STOPS)
    assert text == rendered(gemma_vocab, answer) and out.finish is FinishReason.STOP


def test_a_callers_stop_string_that_is_a_control_token_ends_the_answer(gemma_vocab: NativeModel) -> None:
    answer = words(gemma_vocab, "hello")
    tokens = [*answer, control(gemma_vocab, "<other>"), *words(gemma_vocab, "the world")]
    text, _, out = feed(gemma_vocab, tokens, (), SamplingParams(stop=("<other>",)))
    assert text == rendered(gemma_vocab, answer) and out.finish is FinishReason.STOP
    # Without it as a stop the control token passes, rendering as nothing.
    text, _, out = feed(gemma_vocab, tokens, ())
    assert text == rendered(gemma_vocab, tokens) and out.finish is None


def test_ignore_eos_does_not_cross_a_turn_marker(gemma_vocab: NativeModel) -> None:
    tokens = [
        *words(gemma_vocab, "hello"),
        control(gemma_vocab, "<start_of_turn>"),
        *words(gemma_vocab, "the"),
    ]
    text, _, out = feed(gemma_vocab, tokens, GEMMA_STOPS, SamplingParams(ignore_eos=True))
    assert text == rendered(gemma_vocab, words(gemma_vocab, "hello")) and out.finish is FinishReason.STOP
