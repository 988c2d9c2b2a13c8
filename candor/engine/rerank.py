"""Reranking: a relevance score for each (query, document) pair, from a reranker model run with rank pooling.

llama.cpp runs such a model's classification head (bert-like rerankers: `cls` and `cls.output` over the
CLS token; Qwen3-Reranker: `cls.output` over the last token, then a softmax) and hands back its outputs as
the sequence's pooled embedding; the first is the score, which llama-server reports as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp

from candor.engine.embed import pooled, pooling_context
from candor.engine.native_model import NativeModel
from candor.identity import POOLING_RANK


class Reranker:
    """A context in rank-pooling mode, formatting each pair as llama-server does for the model.

    Rank pooling is forced, as llama-server's --rerank does, since bge-reranker's GGUFs declare no pooling
    type; on a model that is no reranker it would yield a coordinate of an embedding, so callers check
    ModelCard.is_reranker first."""

    def __init__(self, model: NativeModel, *, n_ctx: int, n_threads: int) -> None:
        self.model = model
        self.context = pooling_context(model, n_ctx=n_ctx, n_threads=n_threads, pooling=POOLING_RANK)
        raw = llama_cpp.llama_model_chat_template(model.handle, b"rerank")
        self.template: str | None = raw.decode("utf-8", errors="replace") if raw else None
        vocab = model.vocab
        eos = model.eos if model.eos >= 0 else int(llama_cpp.llama_vocab_sep(vocab))
        self._eos = [eos] if llama_cpp.llama_vocab_get_add_eos(vocab) else []
        sep = int(llama_cpp.llama_vocab_sep(vocab))
        self._sep = [sep] if llama_cpp.llama_vocab_get_add_sep(vocab) else []
        self._bos = [model.bos] if model.adds_bos else []

    def pair_tokens(self, query: str, document: str) -> list[int]:
        """The pair as llama-server's format_prompt_rerank builds it: through the GGUF's rerank template
        (`{query}`, then `{document}`, replaced in its text) when it has one, else [BOS] query [EOS] [SEP]
        document [EOS], each special token where the vocabulary says to add it."""
        model = self.model
        if self.template is not None:
            text = self.template.replace("{query}", query).replace("{document}", document)
            return model.tokenize(text, add_special=False, parse_special=True)
        query_tokens = model.tokenize(query, add_special=False, parse_special=False)
        document_tokens = model.tokenize(document, add_special=False, parse_special=False)
        return [*self._bos, *query_tokens, *self._eos, *self._sep, *document_tokens, *self._eos]

    def score_tokens(self, tokens: Sequence[int]) -> float:
        """The score of one formatted pair: the first output of the model's classification head."""
        return pooled(self.context, tokens, 1, what="a query and document pair")[0]

    def close(self) -> None:
        """Free the reranking context."""
        self.context.close()
