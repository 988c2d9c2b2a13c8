"""Sentence embeddings: one pooled, L2-normalised vector per text."""

from __future__ import annotations

import math
from collections.abc import Sequence

import llama_cpp

from candor.engine.context import DECODE_NO_KV_SLOT, ContextConfig, NativeContext
from candor.engine.native_model import NativeModel
from candor.errors import ContextOverflow, EngineError
from candor.identity import POOLING_RANK, reranker_embeds_nothing

POOLING_MEAN = 1
# The whole input is one micro-batch, and the compute buffer grows with its square (the attention mask):
# 8,192 tokens take about 130 MiB of it, a 32k training context would take 2 GiB.
MAX_EMBED_TOKENS = 8192


def pooling_context(model: NativeModel, *, n_ctx: int, n_threads: int, pooling: int) -> NativeContext:
    """A context in embeddings mode with this pooling, its context capped at what the model was trained on
    (and at MAX_EMBED_TOKENS)."""
    n_ctx = min(n_ctx, MAX_EMBED_TOKENS, model.n_ctx_train if model.n_ctx_train > 0 else n_ctx)
    # The whole input must fit one micro-batch for pooling, so the batch is the context.
    config = ContextConfig(n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads, embeddings=True)
    return NativeContext(model, config, pooling_type=pooling)


def pooled(ctx: NativeContext, tokens: Sequence[int], width: int, *, what: str) -> list[float]:
    """Decode one sequence alone and return llama.cpp's pooled output for it (`width` floats)."""
    if len(tokens) > ctx.n_ctx:
        raise ContextOverflow(
            f"the input is {len(tokens)} tokens but {what} takes at most {ctx.n_ctx}; shorten it"
        )
    ctx.clear()
    batch = ctx.batch
    batch.clear()
    for pos, token in enumerate(tokens):
        batch.add(token, pos, 0, True)
    if ctx.decode() == DECODE_NO_KV_SLOT:
        raise ContextOverflow(f"no room to decode {len(tokens)} tokens; shorten the input")
    pointer = llama_cpp.llama_get_embeddings_seq(ctx.handle, 0)
    if not pointer:
        raise EngineError("llama.cpp returned no pooled output for this model")
    return [float(pointer[i]) for i in range(width)]


class Embedder:
    """A context in embeddings mode. Models that declare no pooling get mean pooling, as Ollama does."""

    def __init__(self, model: NativeModel, *, n_ctx: int, n_threads: int) -> None:
        declared = model.declared_pooling()
        if declared == POOLING_RANK:  # its pooled output is one score, not a vector of n_embd
            raise reranker_embeds_nothing(model.path.name)
        pooling = declared if declared is not None and declared > 0 else POOLING_MEAN
        self.context = pooling_context(model, n_ctx=n_ctx, n_threads=n_threads, pooling=pooling)
        self.model = model

    def embed_tokens(self, tokens: Sequence[int]) -> list[float]:
        """Embed one tokenized text."""
        vector = pooled(self.context, tokens, self.model.n_embd, what="an embedding")
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm > 0 else vector

    def close(self) -> None:
        """Free the embeddings context."""
        self.context.close()
