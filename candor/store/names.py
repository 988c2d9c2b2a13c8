"""Model names: `name[:tag]`, validated so that a name can never become a path."""

from __future__ import annotations

import re
from dataclasses import dataclass

from candor.errors import InvalidParameter

DEFAULT_TAG = "latest"
HF_HOST = "hf.co"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_MAX_SEGMENTS = 4


@dataclass(frozen=True, order=True)
class ModelName:
    """A validated model name. Segments are separated by '/', as in Ollama (`hf.co/org/repo:Q4_K_M`)."""

    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def is_hf(self) -> bool:
        """Whether the name stands for a Hugging Face repository."""
        return self.name.startswith(HF_HOST + "/")


def _check_segment(segment: str, whole: str) -> None:
    if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
        raise InvalidParameter(
            f"invalid model name {whole!r}: each part must start with a letter or digit and use only "
            "letters, digits, '.', '_' and '-' (at most 128 characters); for example 'my-model:7b'"
        )


def parse_name(text: str) -> ModelName:
    """Validate `name[:tag]` (tag defaults to 'latest'); raises InvalidParameter saying what is wrong."""
    if not isinstance(text, str) or not text or len(text) > 512:
        raise InvalidParameter(f"invalid model name {text!r}; use name[:tag], e.g. 'my-model:7b'")
    if "\\" in text or text.startswith("/") or "//" in text or "\0" in text:
        raise InvalidParameter(f"invalid model name {text!r}: a name is not a path; use name[:tag]")
    name, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        name, tag = text, DEFAULT_TAG
    segments = name.split("/")
    if len(segments) > _MAX_SEGMENTS:
        raise InvalidParameter(f"invalid model name {text!r}: at most {_MAX_SEGMENTS} parts separated by '/'")
    for segment in segments:
        _check_segment(segment, text)
    if not _TAG.fullmatch(tag):
        raise InvalidParameter(
            f"invalid tag {tag!r} in {text!r}: use letters, digits, '.', '_' and '-' (e.g. ':Q4_K_M')"
        )
    return ModelName(name, tag)


def looks_like_name(text: str) -> bool:
    """True when text is a valid model name (used to tell names from paths on the command line)."""
    try:
        parse_name(text)
    except InvalidParameter:
        return False
    return True
