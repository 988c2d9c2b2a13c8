"""The generation loop for one sequence: prefix reuse, chunked prefill, sampling, streaming text."""

from __future__ import annotations

from collections.abc import Sequence

from candor.engine.context import DECODE_NO_KV_SLOT, NativeContext
from candor.engine.logprobs import token_logprob
from candor.engine.sampler import SamplerChain
from candor.engine.textout import TextOut
from candor.errors import ContextOverflow, EngineError, InvalidParameter
from candor.types import ChunkStream, SamplingParams

SEQ = 0  # this runner drives a single sequence; the batching scheduler uses many


class SequenceRunner:
    """Drives one context for one sequence, keeping its KV between calls to reuse prompt prefixes."""

    def __init__(self, context: NativeContext) -> None:
        self.context = context
        self.model = context.model
        self.held: list[int] = []  # tokens whose KV the context holds, in position order

    def check_fits(self, prompt: Sequence[int]) -> None:
        """Raise ContextOverflow unless the prompt leaves room for at least one generated token."""
        if len(prompt) >= self.context.n_ctx:
            raise ContextOverflow(
                f"the prompt is {len(prompt)} tokens but the context holds {self.context.n_ctx}; "
                "load the model with a larger context (--ctx / num_ctx) or shorten the prompt"
            )

    def _prefill(self, prompt: Sequence[int], start: int) -> None:
        """Decode prompt[start:] in batches; the last token's logits are kept for sampling."""
        batch = self.context.batch
        step = batch.capacity
        for begin in range(start, len(prompt), step):
            end = min(begin + step, len(prompt))
            batch.clear()
            for pos in range(begin, end):
                batch.add(prompt[pos], pos, SEQ, pos == len(prompt) - 1)
            if self.context.decode() == DECODE_NO_KV_SLOT:
                self.held.clear()
                self.context.clear()
                raise ContextOverflow(
                    f"the KV cache has no room for a {len(prompt)}-token prompt; use a larger context"
                )
            self.held.extend(prompt[begin:end])
        self.context.checkpoint(SEQ)  # the prompt is read: its window is what the next call may reuse

    def generate(
        self, prompt: Sequence[int], params: SamplingParams, *, extra_stop: Sequence[str] = ()
    ) -> ChunkStream:
        """Stream the continuation of `prompt` (token ids) as text chunks; the last carries usage."""
        if not prompt:
            raise InvalidParameter("the prompt is empty; give at least one token of text")
        self.model.check_generates()
        self.check_fits(prompt)
        sampler = SamplerChain(params, self.model.n_vocab, self.model.vocab)
        out = TextOut(self.model, params, extra_stop)
        n_ctx = self.context.n_ctx
        try:
            out.cached_tokens = self.context.reuse_prefix(SEQ, self.held, prompt)
            self._prefill(prompt, out.cached_tokens)
            batch = self.context.batch
            while True:
                token = sampler.sample(self.context, -1)
                logprob = None
                if params.logprobs is not None:
                    logprob = token_logprob(self.model, self.context.logits(-1), token, params.logprobs)
                chunk = out.accept(token, logprob)
                if chunk is not None:
                    yield chunk
                pos = len(self.held)
                if out.finish is not None or pos >= n_ctx:
                    break
                batch.clear()
                batch.add(token, pos, SEQ, True)
                if self.context.decode() == DECODE_NO_KV_SLOT:
                    break  # the cache is full: finish with `length`
                self.held.append(token)
        except EngineError:
            self.held.clear()
            self.context.clear()
            raise
        finally:
            sampler.close()
        yield out.final(len(prompt))
