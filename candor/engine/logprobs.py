"""Log-probabilities of sampled tokens, from the raw logits row (before any sampler truncation)."""

from __future__ import annotations

import ctypes

import numpy as np

from candor.engine.native_model import NativeModel
from candor.types import TokenLogprob


def token_logprob(
    model: NativeModel, logits: ctypes.Array[ctypes.c_float], token: int, top_n: int
) -> TokenLogprob:
    """The sampled `token`'s log-probability under the model, and the `top_n` most likely tokens.

    Computed only when a request asks: a log-softmax over the whole vocabulary costs about a
    millisecond on a 262k-token vocabulary, too much to pay on every token of every request.
    """
    row = np.ctypeslib.as_array(logits, shape=(model.n_vocab,))
    peak = float(row.max())
    log_total = peak + float(np.log(np.exp(row - peak, dtype=np.float64).sum()))
    top: tuple[tuple[bytes, float], ...] = ()
    if top_n > 0:
        best = np.argpartition(row, -top_n)[-top_n:]
        best = best[np.argsort(row[best])[::-1]]
        top = tuple((model.piece(int(t)), float(row[t]) - log_total) for t in best)
    return TokenLogprob(model.piece(token), float(row[token]) - log_total, top)
