"""Built-in chat formats for models whose GGUF file has no chat template, chosen by turn tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from candor.textstream import GluedStop


@dataclass(frozen=True)
class Fallback:
    """One built-in format: the vocabulary tokens that reveal it, its template and its stop strings."""

    name: str
    tokens: frozenset[str]  # all must be in the model's vocabulary; empty matches any model
    evidence: str  # how the vocabulary shows the format, for ChatFormat.describe()
    template: str
    stop: tuple[str, ...]  # every turn marker: a base model that writes one has ended its answer


# Gemma has no system role: like Gemma's own template, the system text opens the first user turn,
# separated by a blank line (and becomes a user turn of its own when no user turn comes first).
GEMMA = """\
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system = '' -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {%- set content = message['content'] | trim -%}
    {%- if loop.first and system -%}
        {%- if role == 'user' -%}
            {%- set content = system + '\\n\\n' + content -%}
        {%- else -%}
            {{- '<start_of_turn>user\\n' + system + '<end_of_turn>\\n' -}}
        {%- endif -%}
    {%- endif -%}
    {{- '<start_of_turn>' + role + '\\n' + content + '<end_of_turn>\\n' -}}
{%- else -%}
    {%- if system -%}
        {{- '<start_of_turn>user\\n' + system + '<end_of_turn>\\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\\n' -}}
{%- endif -%}
"""

CHATML = """\
{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

# Llama 3.1 names the tool role "ipython".
LLAMA3 = """\
{{- bos_token -}}
{%- for message in messages -%}
    {%- set role = 'ipython' if message['role'] == 'tool' else message['role'] -%}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' -}}
    {{- message['content'] | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{%- endif -%}
"""

# Mistral's v3 tokenizer format; the model answers right after [/INST], so there is no generation prompt.
MISTRAL = """\
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system = '' -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- set content = message['content'] -%}
    {%- if loop.first and system -%}
        {%- if message['role'] == 'assistant' -%}
            {{- '[INST] ' + system + '[/INST]' -}}
        {%- else -%}
            {%- set content = system + '\\n\\n' + content -%}
        {%- endif -%}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {{- ' ' + content | trim + eos_token -}}
    {%- else -%}
        {{- '[INST] ' + content + '[/INST]' -}}
    {%- endif -%}
{%- else -%}
    {%- if system -%}
        {{- '[INST] ' + system + '[/INST]' -}}
    {%- endif -%}
{%- endfor -%}
"""

PHI3 = """\
{%- for message in messages -%}
    {%- set role = 'user' if message['role'] == 'tool' else message['role'] -%}
    {{- '<|' + role + '|>\\n' + message['content'] + '<|end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>\\n' -}}
{%- endif -%}
"""

GENERIC = """\
{%- for message in messages -%}
    {{- '### ' + message['role'] | capitalize + ':\\n' + message['content'] + '\\n\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '### Assistant:\\n' -}}
{%- endif -%}
"""

# A base Gemma writes a stray word where a turn marker belongs (the markers' own logits are far below any
# word's), then the role line: "...blue? mendatanguser\n" ends at "blue?"; "the user\n" is answer text.
ROLE_LINES = (GluedStop("user\n"), GluedStop("model\n"))

# First match wins; the last row matches every model.
FALLBACKS: tuple[Fallback, ...] = (
    Fallback(
        "gemma",
        frozenset({"<start_of_turn>", "<end_of_turn>"}),
        "its vocabulary has Gemma's turn tokens",
        GEMMA,
        ("<end_of_turn>", "<start_of_turn>", *ROLE_LINES),
    ),
    Fallback(
        "chatml",
        frozenset({"<|im_start|>", "<|im_end|>"}),
        "its vocabulary has ChatML's turn tokens",
        CHATML,
        ("<|im_end|>", "<|im_start|>"),
    ),
    Fallback(
        "llama3",
        frozenset({"<|start_header_id|>", "<|eot_id|>"}),
        "its vocabulary has Llama 3's turn tokens",
        LLAMA3,
        ("<|eot_id|>", "<|start_header_id|>"),
    ),
    Fallback(
        "mistral",
        frozenset({"[INST]", "[/INST]"}),
        "its vocabulary has Mistral's [INST] tokens",
        MISTRAL,
        ("[INST]", "[/INST]"),
    ),
    Fallback(
        "phi3",
        frozenset({"<|user|>", "<|assistant|>", "<|end|>"}),
        "its vocabulary has Phi-3's turn tokens",
        PHI3,
        ("<|end|>", "<|user|>", "<|assistant|>", "<|system|>"),
    ),
    Fallback(
        "generic",
        frozenset(),
        "its vocabulary has no turn tokens candor recognizes, so turns are marked in plain text",
        GENERIC,
        ("### User:", "### System:", "### Tool:", "### Assistant:"),
    ),
)

# Every token some fallback looks for: the set a caller should test the vocabulary for.
TURN_TOKENS: frozenset[str] = frozenset().union(*(row.tokens for row in FALLBACKS))

# A model with no chat template of its own is usually a base model: it seldom ends its turn, and a small one
# repeats itself until the context is full. Ollama's repeat penalty breaks the loops, and a screenful of
# tokens bounds the rest (Ollama's own num_predict default was once 128). Ollama's option names.
UNTEMPLATED_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"num_predict": 256, "repeat_penalty": 1.1, "repeat_last_n": 64}
)
