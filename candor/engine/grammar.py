"""Constrained decoding: sampling under a GBNF grammar (a JSON schema becomes one in grammar_limits).

Sampling follows llama.cpp's common sampler: sample with the ordinary chain, check that one token against
the grammar, and only when it is rejected filter the whole vocabulary by the grammar and sample again.
Most tokens pass the check, so a grammar costs little.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np

from candor.errors import InvalidParameter

_NEG_INF = float("-inf")
SHORTLIST = 128  # tokens tried first when the chain's pick breaks the grammar


class GrammarGate:
    """A grammar sampler beside a normal chain: checks the chain's pick, resamples only when rejected."""

    def __init__(self, vocab: Any, grammar: str, n_vocab: int) -> None:
        handle = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not handle:
            raise InvalidParameter("the grammar does not parse (GBNF with a 'root' rule is expected)")
        self._grammar: int | None = handle
        self._n_vocab = n_vocab
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(self._one, 1, -1, False)
        self._all = (llama_cpp.llama_token_data * n_vocab)()
        self._all_view = np.ctypeslib.as_array(self._all)  # structured view: id, logit, p

    def allows(self, token: int) -> bool:
        """Whether the grammar accepts `token` next."""
        item: Any = self._one[0]
        item.id, item.logit, item.p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        return bool(self._one[0].logit != _NEG_INF)

    def resample(self, chain: int, logits: Any) -> int:
        """The chain's pick broke the grammar: choose again among the tokens the grammar allows.

        Checking the grammar against all 262k tokens of a large vocabulary takes tens of milliseconds, so
        the best SHORTLIST tokens by logit are tried first; the whole vocabulary only when none fits.
        """
        row = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        best = (
            np.argpartition(row, -SHORTLIST)[-SHORTLIST:]
            if self._n_vocab > SHORTLIST
            else np.arange(self._n_vocab)
        )
        token = self._choose(chain, best.astype(np.int32), row[best])
        if token is not None:
            return token
        token = self._choose(chain, np.arange(self._n_vocab, dtype=np.int32), row)
        if token is None:
            raise InvalidParameter("the grammar allows no token here; check the schema or grammar")
        return token

    def _choose(self, chain: int, ids: Any, values: Any) -> int | None:
        n = len(ids)
        view = self._all_view[:n]
        view["id"] = ids
        view["logit"] = values
        view["p"] = 0.0
        array = llama_cpp.llama_token_data_array(self._all, n, -1, False)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        if not np.isfinite(self._all_view["logit"][: array.size]).any():
            return None
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        return int(self._all[array.selected].id)

    def accept(self, token: int) -> None:
        """Advance the grammar past `token`."""
        llama_cpp.llama_sampler_accept(self._grammar, token)

    def close(self) -> None:
        """Free the grammar sampler."""
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
