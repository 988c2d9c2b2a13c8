"""Licences: the notices of the engine candor ships on, and each model's own licence text."""

from __future__ import annotations

import html.parser
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from candor.defaults import default_model_terms
from candor.identity import ModelCard
from candor.store.registry import StoreEntry

BUILTIN = "builtin"


def engine_notices() -> str:
    """candor's licence and the MIT notices of llama.cpp, ggml and llama-cpp-python (shipped as NOTICE)."""
    return (resources.files("candor") / "NOTICE").read_text(encoding="utf-8")


def license_texts(store: object, entry: StoreEntry | None) -> list[Path]:
    """The licence files that came with a model: the hub's LICENSE, Ollama's layer, Gemma's terms."""
    if entry is None:
        return []
    if entry.source == BUILTIN:
        return [default_model_terms()]
    return [Path(p) for p in entry.license_files if Path(p).is_file()]


class _TextOnly(html.parser.HTMLParser):
    """Keep the readable text of an HTML page (licence pages are often saved as HTML)."""

    _SKIP = frozenset({"script", "style", "head", "nav", "footer", "svg"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.article: list[str] | None = None  # the text of <article>, when the page has one
        self._skipping = 0
        self._in_article = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "article":
            self._in_article += 1
            if self.article is None:
                self.article = []
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "article" and self._in_article:
            self._in_article -= 1
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)
            if self._in_article and self.article is not None:
                self.article.append(data)


def readable(path: Path) -> str:
    """A licence file's text; HTML is reduced to its readable text."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() not in (".html", ".htm") and not raw.lstrip().lower().startswith(
        ("<!doctype", "<html")
    ):
        return raw
    parser = _TextOnly()
    parser.feed(raw)
    # Saved web pages carry navigation around the licence: keep the article when there is one.
    body = parser.article if parser.article else parser.parts
    lines = [" ".join(line.split()) for line in "".join(body).splitlines()]
    text = "\n".join(line for line in lines if line)
    return text


@dataclass(frozen=True)
class ModelLicense:
    """What a model's metadata says about its licence, and the licence texts that came with it."""

    model: str
    license: str | None
    license_name: str | None
    license_link: str | None
    texts: tuple[tuple[Path, str], ...]


def model_license(name: str, card: ModelCard, files: list[Path]) -> ModelLicense:
    """Collect a model's licence fields and texts."""
    return ModelLicense(
        model=name,
        license=card.license,
        license_name=card.license_name,
        license_link=card.license_link,
        texts=tuple((p, readable(p)) for p in files),
    )
