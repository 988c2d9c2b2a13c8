"""Request bodies of llama-server's utility routes. `model` is candor's addition (llama-server serves one
model): without it, the default model answers."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from candor.server.request_fields import MAX_CTX
from candor.server.request_limits import UnicodeRequest


class TokenizeRequest(UnicodeRequest):
    model: str | None = None
    content: str = ""
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(UnicodeRequest):
    model: str | None = None
    tokens: list[int] = Field(default_factory=list, max_length=1 << 20)


class ApplyTemplateRequest(UnicodeRequest):
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None


class RerankRequest(UnicodeRequest):
    model: str | None = None
    query: str
    documents: list[str] | None = None
    texts: list[str] | None = None  # TEI's name for the documents: the answer is then TEI's bare list
    top_n: int | None = Field(default=None, ge=0)
    return_text: bool = False  # TEI: each result carries its document's text

    @property
    def is_tei(self) -> bool:
        """Whether the client speaks TEI's rerank API (llama-server's test: the body has `texts`)."""
        return self.texts is not None

    @property
    def candidates(self) -> list[str]:
        """The documents to rank: `documents`, else TEI's `texts` (as llama-server reads them)."""
        return self.documents if self.documents is not None else self.texts or []


class InfillChunk(UnicodeRequest):
    filename: str = ""
    text: str = ""


class InfillRequest(UnicodeRequest):
    model: str | None = None
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InfillChunk] = Field(default_factory=list)
    prompt: str = ""
    n_predict: int | None = Field(default=None, ge=-1, le=MAX_CTX)
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[str] | None = None
    stream: bool = False
