"""The library and engine on the real default model (gemma-3-270m Q4_K_M)."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest
from near_tie import Greedy, assert_same_up_to_a_near_tie

import candor
from candor import ContextOverflow, FinishReason
from candor.store import Store

PROMPT = "The history of the printing press begins"


def test_greedy_output_equals_llama_cpp_pythons_reference_path(
    gemma: candor.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = gemma.generate(PROMPT, stream=False, temperature=0, max_tokens=48, ignore_eos=True, logprobs=20)
    # `again` reuses the KV of all but the prompt's last token: other batch shapes, so up to a near-tie.
    again = gemma.generate(PROMPT, stream=False, temperature=0, max_tokens=48, ignore_eos=True, logprobs=20)
    assert_same_up_to_a_near_tie(Greedy.of(ours.logprobs), Greedy.of(again.logprobs))
    # llama-cpp-python's high-level Llama class, same file, context, threads and batch. Flash attention
    # on, as llama.cpp's default ("auto") resolves it on the CPU backend. The same CPU buffer types as candor
    # chose (the Llama class has no argument for them): on a CPU whose AMX kernels crash, none.
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def model_params() -> llama_cpp.llama_model_params:
        params = defaults()
        params.use_extra_bufts = gemma.cpu_buffers.extra
        return params

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", model_params)
    reference = llama_cpp.Llama(
        model_path=str(gemma.path), n_ctx=2048, n_threads=2, n_batch=512, flash_attn=True, verbose=False
    )
    try:
        prompt_tokens = reference.tokenize(PROMPT.encode(), add_bos=True)
        assert prompt_tokens == gemma.tokenize(PROMPT)
        expected: list[int] = []
        for token in reference.generate(prompt_tokens, temp=0.0, repeat_penalty=1.0):
            expected.append(token)
            if len(expected) == 48:
                break
        assert list(ours.tokens) == expected
        assert ours.text == reference.detokenize(expected).decode("utf-8")
    finally:
        reference.close()


def test_a_stop_string_ends_the_text_before_it(gemma: candor.Model) -> None:
    greedy = {"stream": False, "temperature": 0, "max_tokens": 48, "ignore_eos": True}
    # Every run below then reuses the prompt's KV and reads its last token again: one batch shape, so one
    # arithmetic, and the answers agree to the token.
    gemma.generate(PROMPT, stream=False, temperature=0, max_tokens=1)
    free = gemma.generate(PROMPT, **greedy).text
    stop = free[len(free) // 3 : len(free) // 3 + 12]  # a stretch of what this build wrote, across tokens
    assert len(stop) == 12
    done = gemma.generate(PROMPT, stop=[stop], **greedy)
    assert done.finish_reason is FinishReason.STOP
    assert done.text == free[: free.index(stop)]
    streamed = "".join(c.text for c in gemma.generate(PROMPT, **{**greedy, "stream": True}, stop=[stop]))
    assert streamed == done.text


def test_multibyte_characters_stream_whole(gemma: candor.Model) -> None:
    # Gemma's vocabulary spells this emoji as four byte tokens, which the grammar makes the model write:
    # 20 tokens are exactly five emoji.
    chunks = list(gemma.generate("🦙🦙🦙🦙🦙🦙🦙🦙", temperature=0, max_tokens=20, grammar='root ::= "🦙"+'))
    text = "".join(c.text for c in chunks)
    tokens = [t for c in chunks for t in c.tokens]
    assert text == "🦙" * 5, text
    assert "\ufffd" not in text
    assert text == gemma.detokenize(tokens)
    # Some token alone is an incomplete UTF-8 sequence, and its chunk waited for the rest of the character.
    partial = [t for t in tokens if "\ufffd" in gemma.detokenize([t])]
    assert partial
    assert any(len(c.tokens) > 1 for c in chunks)
    assert all("\ufffd" not in c.text for c in chunks)


def test_max_tokens_and_usage(gemma: candor.Model) -> None:
    done = gemma.generate(PROMPT, stream=False, max_tokens=7, ignore_eos=True, seed=3)
    assert done.finish_reason is FinishReason.LENGTH
    assert done.usage.completion_tokens == 7 == len(done.tokens)
    assert done.usage.prompt_tokens == len(gemma.tokenize(PROMPT))
    assert done.timings.prompt_seconds > 0 and done.timings.decode_seconds > 0


def test_chat_uses_the_disclosed_gemma_fallback(gemma: candor.Model) -> None:
    fmt = gemma.chat_format
    assert fmt.is_fallback and fmt.name == "gemma"
    assert "no chat template" in fmt.describe()
    tokens = gemma.chat_tokens([{"role": "user", "content": "Hi"}])
    start, end = (
        gemma.card.special_tokens_present["<start_of_turn>"],
        gemma.card.special_tokens_present["<end_of_turn>"],
    )
    assert tokens[0] == gemma.card.bos_token_id and tokens[1] == start  # one BOS, then a turn
    assert tokens.count(gemma.card.bos_token_id) == 1
    assert tokens.count(start) == 2 and tokens.count(end) == 1  # user turn closed, model turn opened
    reply = gemma.chat(
        [{"role": "user", "content": "Name a colour."}], stream=False, temperature=0, max_tokens=30
    )
    assert reply.usage.prompt_tokens == len(
        gemma.chat_tokens([{"role": "user", "content": "Name a colour."}])
    )
    assert "<end_of_turn>" not in reply.text and "<start_of_turn>" not in reply.text


def test_prefix_reuse_gives_the_same_answer_as_a_fresh_context(
    gemma: candor.Model, default_model_path: Path
) -> None:
    # Longer than Gemma's 512-token sliding window, so the window check is exercised too.
    # Reused KV was computed in other batch shapes than a fresh context's: the same up to a near-tie.
    greedy = {"stream": False, "temperature": 0, "ignore_eos": True, "logprobs": 20}
    history = " ".join(f"Fact {i}: the number {i} follows {i - 1}." for i in range(1, 90))
    first = gemma.generate(history, max_tokens=8, **greedy)
    longer = history + first.text + " Next,"
    warm = gemma.generate(longer, max_tokens=16, **greedy)
    with candor.load(default_model_path, ctx=2048, threads=2) as fresh:
        cold = fresh.generate(longer, max_tokens=16, **greedy)
    assert len(gemma.tokenize(history)) > 512
    assert_same_up_to_a_near_tie(Greedy.of(warm.logprobs), Greedy.of(cold.logprobs))
    # Going back to a shorter prompt must not reuse KV past the shared prefix.
    short = gemma.generate(PROMPT, max_tokens=8, **greedy)
    with candor.load(default_model_path, ctx=2048, threads=2) as fresh:
        again = fresh.generate(PROMPT, max_tokens=8, **greedy)
    assert_same_up_to_a_near_tie(Greedy.of(short.logprobs), Greedy.of(again.logprobs))


def test_prompt_too_long_for_the_context_is_a_clear_error(default_model_path: Path) -> None:
    with candor.load(default_model_path, ctx=256, threads=2) as small:
        with pytest.raises(ContextOverflow, match="larger context"):
            small.generate("word " * 400, stream=False)
        # The model still works after the refusal.
        assert (
            small.generate("Hello", stream=False, max_tokens=3, ignore_eos=True).usage.completion_tokens == 3
        )


def test_load_without_arguments_uses_the_embedded_default_model() -> None:
    with candor.load(threads=2, ctx=512) as model:
        assert model.card.architecture == "gemma3"
        assert model.card.file_type == "Q4_K_M"
        assert model.card.license == "gemma"
        assert model.path.name == "gemma-3-270m-q4_k_m.gguf"
        done = model.generate("Hello", stream=False, max_tokens=4, ignore_eos=True)
        assert done.usage.completion_tokens == 4
    with pytest.raises(candor.ModelClosed):
        model.generate("Hello", stream=False)


def test_embeddings_of_the_default_model(gemma: candor.Model) -> None:
    a, b, c = gemma.embed(["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock markets fell."])
    assert len(a) == gemma.card.embedding_length == 640
    for v in (a, b, c):
        assert abs(sum(x * x for x in v) - 1) < 1e-4
    assert gemma.embed("The cat sat on the mat.")[0] == pytest.approx(a, abs=1e-6)


def test_tokenize_round_trip(gemma: candor.Model) -> None:
    text = "Hello, world! ünïcödé 日本"
    tokens = gemma.tokenize(text)
    assert tokens[0] == gemma.card.bos_token_id
    assert gemma.detokenize(tokens) == text
    assert gemma.tokenize("<start_of_turn>", add_special=False, parse_special=True) == [
        gemma.card.special_tokens_present["<start_of_turn>"]
    ]


def test_the_default_model_entry_is_remembered_until_its_file_changes() -> None:
    store = Store()  # a private CANDOR_HOME: the model is assembled and verified here
    entry = store.builtin_entry()
    assert store.builtin_entry() is entry  # a server asks per request: one stat answers
    Path(entry.path).write_bytes(b"not the model any more")
    again = store.builtin_entry()  # the file changed: verified again, so assembled again
    assert again is not entry and again.sha256 == entry.sha256
    assert Path(again.path).stat().st_size == entry.size
