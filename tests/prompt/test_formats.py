"""Choosing a chat format, the built-in fallbacks' exact output, and render_chat's input checks."""

from __future__ import annotations

import pytest

from candor.errors import ContextOverflow, InvalidParameter, TemplateError
from candor.prompt import (
    FALLBACK_NAMES,
    TURN_TOKENS,
    ChatFormat,
    RenderLimits,
    choose_chat_format,
    fallback_format,
    render_chat,
)
from candor.prompt.fallbacks import FALLBACKS
from candor.types import Message

GEMMA_TOKENS = {"<start_of_turn>", "<end_of_turn>"}
CHATML_TOKENS = {"<|im_start|>", "<|im_end|>"}
LLAMA3_TOKENS = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
MISTRAL_TOKENS = {"[INST]", "[/INST]"}
PHI3_TOKENS = {"<|user|>", "<|assistant|>", "<|end|>", "<|system|>"}

CONVERSATION = [
    Message("system", "You are terse."),
    Message("user", "Hi"),
    Message("assistant", "Hello!"),
]


@pytest.mark.parametrize(
    ("tokens", "name"),
    [
        (GEMMA_TOKENS, "gemma"),
        (CHATML_TOKENS, "chatml"),
        (LLAMA3_TOKENS, "llama3"),
        (MISTRAL_TOKENS, "mistral"),
        (PHI3_TOKENS, "phi3"),
        (set(), "generic"),
        ({"<start_of_turn>"}, "generic"),  # half a format is no format
        (GEMMA_TOKENS | CHATML_TOKENS, "gemma"),  # table order decides
        (CHATML_TOKENS | LLAMA3_TOKENS, "chatml"),
    ],
)
def test_fallback_is_chosen_by_vocabulary_tokens(tokens: set[str], name: str) -> None:
    fmt = choose_chat_format(None, "llama", tokens)
    assert fmt.name == name
    assert fmt.source == "fallback"
    assert fmt.is_fallback


def test_the_models_own_template_wins() -> None:
    fmt = choose_chat_format("{{ messages[0]['content'] }}", "gemma3", GEMMA_TOKENS)
    assert (fmt.source, fmt.name, fmt.stop, fmt.is_fallback) == ("model", "model's own template", (), False)
    assert fmt.describe() == "the model's own chat template"


@pytest.mark.parametrize("template", ["", "  \n"])
def test_an_empty_template_counts_as_none(template: str) -> None:
    assert choose_chat_format(template, "gemma3", GEMMA_TOKENS).name == "gemma"


def test_describe_says_why_a_fallback_was_chosen() -> None:
    assert choose_chat_format(None, "gemma3", GEMMA_TOKENS).describe() == (
        "fallback chat format 'gemma' "
        "(the model has no chat template; its vocabulary has Gemma's turn tokens)"
    )
    generic = choose_chat_format(None, "gpt2", ()).describe()
    assert generic.startswith("fallback chat format 'generic' (the model has no chat template; ")
    assert "'gpt2'" in generic


def test_turn_tokens_lists_every_token_the_table_looks_for() -> None:
    assert (
        GEMMA_TOKENS
        | CHATML_TOKENS
        | MISTRAL_TOKENS
        | {
            "<|start_header_id|>",
            "<|eot_id|>",
            "<|user|>",
            "<|assistant|>",
            "<|end|>",
        }
        == TURN_TOKENS
    )


EXPECTED = {
    "gemma": (
        "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>model\n"
    ),
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n"
    ),
    "llama3": (
        "<bos><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": "<bos>[INST] You are terse.\n\nHi[/INST] Hello!</s>",
    "phi3": (
        "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n"
        "<|assistant|>\nHello!<|end|>\n<|assistant|>\n"
    ),
    "generic": "### System:\nYou are terse.\n\n### User:\nHi\n\n### Assistant:\nHello!\n\n### Assistant:\n",
}


@pytest.mark.parametrize("name", FALLBACK_NAMES)
def test_fallback_renders_exactly(name: str) -> None:
    text = render_chat(fallback_format(name), CONVERSATION, bos_token="<bos>", eos_token="</s>")
    assert text == EXPECTED[name]


@pytest.mark.parametrize(
    ("name", "stop"),
    [
        ("gemma", "<end_of_turn>"),
        ("chatml", "<|im_end|>"),
        ("llama3", "<|eot_id|>"),
        ("mistral", "[INST]"),
        ("phi3", "<|end|>"),
        ("generic", "### User:"),
    ],
)
def test_fallbacks_carry_their_stop_strings(name: str, stop: str) -> None:
    assert stop in fallback_format(name).stop


@pytest.mark.parametrize("name", FALLBACK_NAMES)
def test_fallbacks_stop_at_every_turn_marker(name: str) -> None:
    # A base model that writes any marker of the format, opening a turn or closing one, has ended its answer.
    row = next(row for row in FALLBACKS if row.name == name)
    markers = row.tokens or {f"### {role}:" for role in ("System", "User", "Assistant", "Tool")}
    assert markers <= set(fallback_format(name).stop)


def test_gemma_fallback_system_handling() -> None:
    gemma = fallback_format("gemma")
    # No user turn first: the system text becomes a user turn of its own.
    assert render_chat(
        gemma, [Message("system", "S"), Message("assistant", "A")], add_generation_prompt=False
    ) == ("<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n")
    assert render_chat(gemma, [Message("system", "S")]) == (
        "<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\n"
    )
    # Later system messages and tool results are user turns; contents are trimmed like Gemma's own.
    later = [Message("user", " U "), Message("system", "S2"), Message("tool", "T")]
    assert render_chat(gemma, later, add_generation_prompt=False) == (
        "<start_of_turn>user\nU<end_of_turn>\n<start_of_turn>user\nS2<end_of_turn>\n"
        "<start_of_turn>user\nT<end_of_turn>\n"
    )


def test_llama3_fallback_names_tool_results_ipython() -> None:
    text = render_chat(fallback_format("llama3"), [Message("tool", "42")], add_generation_prompt=False)
    assert text == "<|start_header_id|>ipython<|end_header_id|>\n\n42<|eot_id|>"


def test_fallback_format_rejects_unknown_names() -> None:
    with pytest.raises(InvalidParameter, match="chatml"):
        fallback_format("vicuna")


def test_unknown_role_is_an_invalid_parameter() -> None:
    with pytest.raises(InvalidParameter, match="unknown message role 'narrator'"):
        render_chat(fallback_format("chatml"), [Message("narrator", "Once upon a time")])


def test_empty_conversation_is_an_invalid_parameter() -> None:
    with pytest.raises(InvalidParameter, match="at least one message"):
        render_chat(fallback_format("chatml"), [])


def test_reserved_variables_cannot_be_overridden() -> None:
    with pytest.raises(InvalidParameter, match="messages"):
        render_chat(fallback_format("chatml"), CONVERSATION, variables={"messages": []})


def test_chat_format_checks_its_source() -> None:
    with pytest.raises(InvalidParameter, match="source"):
        ChatFormat(template="", source="internet", name="x")


def test_a_huge_conversation_is_a_context_overflow() -> None:
    messages = [Message("user", "x" * 1_000)]
    with pytest.raises(ContextOverflow):
        render_chat(fallback_format("chatml"), messages, limits=RenderLimits(max_value=500))


def test_output_limit_applies_to_rendered_prompts() -> None:
    messages = [Message("user", "x" * 1_000)]
    with pytest.raises(
        TemplateError, match=r"candor's built-in 'chatml' chat format produced more than 100 "
    ):
        render_chat(fallback_format("chatml"), messages, limits=RenderLimits(max_output=100))


def test_fallback_errors_suggest_raw_only() -> None:
    with pytest.raises(TemplateError) as caught:
        render_chat(
            fallback_format("chatml"), [Message("user", "x" * 200)], limits=RenderLimits(max_output=100)
        )
    assert str(caught.value).endswith("pass --raw to send your text without a chat template")
