"""Ollama's option names (`options`, Modelfile PARAMETER, `/set parameter`) mapped onto SamplingParams."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from candor.errors import InvalidParameter
from candor.types import SamplingParams

# Ollama name -> (SamplingParams field, parser of a text value)
SAMPLING_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", float),
    "min_p": ("min_p", float),
    "typical_p": ("typical_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "presence_penalty": ("presence_penalty", float),
    "frequency_penalty": ("frequency_penalty", float),
    "seed": ("seed", int),
    "num_predict": ("max_tokens", int),
}


def parse_option(name: str, text: str) -> tuple[str, Any]:
    """Turn one `NAME VALUE` pair (text) into (SamplingParams field, typed value)."""
    if name == "stop":
        return "stop", text
    if name not in SAMPLING_OPTIONS:
        raise InvalidParameter(f"unknown parameter {name!r}; known: {', '.join(SAMPLING_OPTIONS)}, stop")
    field, parse = SAMPLING_OPTIONS[name]
    try:
        return field, parse(text)
    except ValueError:
        raise InvalidParameter(f"parameter {name} needs a {parse.__name__}; got {text!r}") from None


def option_changes(options: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama-named options (typed JSON values, `stop` a string or list) as SamplingParams fields.

    `num_predict` of -1 or -2 means "no limit" in Ollama, and seed -1 a fresh random seed (both None
    here); names candor does not sample with are left out (context and hardware options are the loader's).
    """
    changes: dict[str, Any] = {}
    for name, value in options.items():
        if name == "grammar":
            changes["grammar"] = value
        elif name == "stop":
            changes["stop"] = (*changes.get("stop", ()), *([value] if isinstance(value, str) else value))
        elif name in SAMPLING_OPTIONS:
            field = SAMPLING_OPTIONS[name][0]
            if name == "num_predict" and isinstance(value, int) and value in (-1, -2):
                value = None
            if name == "seed" and value == -1 and not isinstance(value, bool):
                value = None
            changes[field] = value
    return changes


def apply_options(base: SamplingParams, options: Mapping[str, Any]) -> SamplingParams:
    """Apply Ollama-named options on top of `base` (see option_changes)."""
    return replace(base, **option_changes(options))


def sampling_defaults(
    parameters: Mapping[str, Any], format_options: Mapping[str, Any] | None = None
) -> SamplingParams:
    """What answers start from: a chat format's options (a model without a template is bounded; None for
    raw completion), then a model name's own parameters (an imported Ollama model's params layer)."""
    return apply_options(apply_options(SamplingParams(), format_options or {}), parameters)
