"""Licences: the notices of the engine candor ships on, and each model's own licence text."""

from __future__ import annotations

import html.parser
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from candor.default_model import default_model_terms
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


# Elements that are never part of a page's text, and whose contents are not either.
_NEVER_TEXT = frozenset({"script", "style", "head", "template", "noscript", "svg", "nav", "button", "form"})
# The page's header and footer, unless inside the document itself (an article's header holds its title).
_PAGE_ENDS = frozenset({"header", "footer"})
_DOCUMENT = frozenset({"article", "main", "section", "aside"})
# Landmark roles of a site's own furniture (WAI-ARIA), around the document a page carries.
_CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "menu", "menubar", "toolbar"})
_BLOCK = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"})
# Elements that never have an end tag (or contents).
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


def _is_chrome(tag: str, attrs: list[tuple[str, str | None]], *, in_document: bool) -> bool:
    """Whether an element is page furniture rather than text: by its tag, a landmark role, being hidden, or
    the `nocontent` class that sites (Google's docs among them) put on banners, breadcrumbs and buttons."""
    if tag in _NEVER_TEXT or (tag in _PAGE_ENDS and not in_document):
        return True
    values = {name: (value or "") for name, value in attrs}
    classes = values.get("class", "").lower().split()
    return (
        values.get("role", "").lower() in _CHROME_ROLES
        or "hidden" in values
        or values.get("aria-hidden", "").lower() == "true"
        or "nocontent" in classes
        or any("breadcrumb" in c for c in classes)
    )


class _TextOnly(html.parser.HTMLParser):
    """Keep the readable text of an HTML page (licence pages are often saved as HTML), without the site's
    navigation, banners, feedback buttons and other furniture."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.article: list[str] | None = None  # the text of <article>, when the page has one
        self._open: list[tuple[str, bool]] = []  # open elements: (tag, inside furniture)

    def _skipping(self) -> bool:
        return bool(self._open) and self._open[-1][1]

    def _in_article(self) -> bool:
        return any(tag == "article" for tag, _ in self._open)

    def _chrome(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        in_document = any(open_tag in _DOCUMENT for open_tag, _ in self._open)
        return self._skipping() or _is_chrome(tag, attrs, in_document=in_document)

    def _add(self, text: str) -> None:
        self.parts.append(text)
        if self.article is not None and self._in_article():
            self.article.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        skipping = self._chrome(tag, attrs)
        if tag == "article" and self.article is None and not skipping:
            self.article = []
        if tag not in _VOID:
            self._open.append((tag, skipping))
        if tag in _BLOCK and not skipping:
            self._add("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK and not self._chrome(tag, attrs):
            self._add("\n")  # <br/>: no element stays open

    def handle_endtag(self, tag: str) -> None:
        # HTML leaves some end tags out (</p>, </li>): close up to the matching open element, if any.
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                skipping = self._open[depth][1]
                del self._open[depth:]
                if tag in _BLOCK and not skipping:
                    self._add("\n")
                return

    def handle_data(self, data: str) -> None:
        if not self._skipping():
            self._add(data)


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
