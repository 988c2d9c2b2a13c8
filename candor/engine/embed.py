"""Sentence embeddings: one pooled, L2-normalised vector per text."""

from __future__ import annotations

import math
from collections.abc import Sequence

import llama_cpp

from candor.engine.context import DECODE_NO_KV_SLOT, ContextConfig, NativeContext
from candor.engine.native_model import NativeModel
from candor.errors import ContextOverflow, EngineError

POOLING_MEAN = 1
# The whole input is one micro-batch, and the compute buffer grows with its square (the attention mask):
# 8,192 tokens take about 130 MiB of it, a 32k training context would take 2 GiB.
MAX_EMBED_TOKENS = 8192


class Embedder:
    """A context in embeddings mode. Models that declare no pooling get mean pooling, as Ollama does."""

    def __init__(self, model: NativeModel, *, n_ctx: int, n_threads: int) -> None:
        n_ctx = min(n_ctx, MAX_EMBED_TOKENS, model.n_ctx_train if model.n_ctx_train > 0 else n_ctx)
        # The whole input must fit one micro-batch for pooling, so the batch is the context.
        config = ContextConfig(n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads, embeddings=True)
        arch = model.meta("general.architecture") or ""
        declared = model.meta(f"{arch}.pooling_type")
        pooling = int(declared) if declared and declared.isdigit() and int(declared) > 0 else POOLING_MEAN
        self.context = NativeContext(model, config, pooling_type=pooling)
        self.model = model

    def embed_tokens(self, tokens: Sequence[int]) -> list[float]:
        """Embed one tokenized text."""
        ctx = self.context
        if len(tokens) > ctx.n_ctx:
            raise ContextOverflow(
                f"the input is {len(tokens)} tokens but embeddings take at most {ctx.n_ctx}; shorten it"
            )
        ctx.clear()
        batch = ctx.batch
        batch.clear()
        for pos, token in enumerate(tokens):
            batch.add(token, pos, 0, True)
        if ctx.decode() == DECODE_NO_KV_SLOT:
            raise ContextOverflow(f"no room to embed {len(tokens)} tokens; shorten the input")
        pointer = llama_cpp.llama_get_embeddings_seq(ctx.handle, 0)
        if not pointer:
            raise EngineError("llama.cpp returned no pooled embedding for this model")
        vector = [float(pointer[i]) for i in range(self.model.n_embd)]
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm > 0 else vector

    def close(self) -> None:
        """Free the embeddings context."""
        self.context.close()
