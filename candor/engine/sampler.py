"""Sampler chains built from SamplingParams, in llama.cpp's own order."""

from __future__ import annotations

import secrets
from typing import Any

import llama_cpp

from candor.engine.context import NativeContext
from candor.engine.grammar import GrammarGate
from candor.errors import InvalidParameter
from candor.grammar_limits import schema_grammar
from candor.types import SamplingParams


class SamplerChain:
    """One `llama_sampler` chain for one generation; it remembers accepted tokens (penalties)."""

    def __init__(self, params: SamplingParams, n_vocab: int, vocab: Any = None) -> None:
        self._gate: GrammarGate | None = None
        grammar = params.grammar
        if params.json_schema is not None:
            grammar = schema_grammar(params.json_schema)
        if grammar is not None:
            if vocab is None:
                raise InvalidParameter("a grammar needs the model's vocabulary")
            self._gate = GrammarGate(vocab, grammar, n_vocab)
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain: int | None = llama_cpp.llama_sampler_chain_init(chain_params)
        self.seed = params.seed if params.seed is not None else secrets.randbelow(2**32 - 1)
        for sampler in self._stages(params, n_vocab):
            llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def _stages(self, p: SamplingParams, n_vocab: int) -> list[int]:
        # common_sampler's order: penalties, top-k, typical, top-p, min-p, temperature, dist.
        # top-k runs before anything that walks the whole vocabulary (262k tokens on Gemma);
        # neutral stages are left out because each one would still touch every candidate.
        stages: list[int] = []
        if p.repeat_last_n != 0 and (
            p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0
        ):
            last_n = n_vocab if p.repeat_last_n < 0 else p.repeat_last_n
            stages.append(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
                )
            )
        if p.greedy:
            stages.append(llama_cpp.llama_sampler_init_greedy())
            return stages
        if p.top_k > 0:
            stages.append(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.typical_p < 1.0:
            stages.append(llama_cpp.llama_sampler_init_typical(p.typical_p, 1))
        if p.top_p < 1.0:
            stages.append(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            stages.append(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        stages.append(llama_cpp.llama_sampler_init_temp(p.temperature))
        stages.append(llama_cpp.llama_sampler_init_dist(self.seed))
        return stages

    def sample(self, context: NativeContext, output_index: int) -> int:
        """Choose the next token from output row `output_index` of the last decode, and accept it."""
        # llama_sampler_sample also calls accept() on the chain.
        token = int(llama_cpp.llama_sampler_sample(self._chain, context.handle, output_index))
        gate = self._gate
        if gate is None:
            return token
        if not gate.allows(token):
            assert self._chain is not None
            token = gate.resample(self._chain, context.logits(output_index))
        gate.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Take a token the engine chose itself (the chain's penalties remember it as if sampled)."""
        assert self._chain is not None
        llama_cpp.llama_sampler_accept(self._chain, token)
        if self._gate is not None:
            self._gate.accept(token)

    def close(self) -> None:
        """Free the chain and its stages (idempotent)."""
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
