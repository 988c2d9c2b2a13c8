"""Continuous batching: one llama context, N sequences (slots), one llama_decode per step.

Every step builds one batch holding the next token of every decoding slot plus chunks of the prompts
of newly admitted requests (chunked prefill, so a long prompt does not stall the others), decodes it
once, samples each slot with its own sampler chain, and returns each request's new text. Requests join
at the next step; a finished or cancelled one frees its slot at once. A slot keeps its KV after a
request ends, so the next request sharing a prefix (the next turn of a chat) decodes only the rest.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from candor.engine.context import DECODE_NO_KV_SLOT, ContextConfig, NativeContext, common_prefix
from candor.engine.logprobs import token_logprob
from candor.engine.native_model import NativeModel
from candor.engine.sampler import SamplerChain
from candor.engine.textout import TextOut
from candor.engine.thinking_budget import ThinkingCap
from candor.errors import CandorError, ContextOverflow, EngineError, InvalidParameter
from candor.types import Chunk, FinishReason, SamplingParams, ThinkingBudget

# A prompt with at most this many tokens left, while other slots decode, reads one token a step in their
# pass instead of costing a pass of its own over the weights.
TRICKLE = 4

# A shared prefix shorter than this is read again, rather than reused, when other prompts are read in the
# same step: a few reused tokens save little, but leave this prompt shorter than the others, and llama.cpp
# reads each run of equal lengths in a pass of its own (see _fill_batch).
MIN_REUSE_BESIDE_OTHERS = 16

# Prompt tokens per slot in the load-time warm-up batch: about the size of a chat message.
WARM_UP_TOKENS = 16


def overflow_message(prompt: int, limit: int, model: NativeModel) -> str:
    """What to do about a prompt that does not fit: raise the context while the model allows it."""
    said = f"the prompt is {prompt} tokens but this model is loaded with {limit} tokens per request"
    trained = model.n_ctx_train
    if trained > 0 and prompt >= trained:
        return f"{said}, and it was trained for {trained}; shorten the prompt"
    most = f" (at most {trained}, what it was trained for)" if trained > 0 else ""
    return (
        f"{said}; load it with a larger context{most}: CANDOR_CTX or `candor serve --ctx`, or num_ctx "
        "in the request's options (Ollama's API); or shorten the prompt"
    )


def choose_slot(idle: list[_Slot], prompt: tuple[int, ...]) -> _Slot:
    """The idle slot a prompt takes: the one already holding most of it (its conversation's last turn);
    else an empty slot, rather than overwrite another conversation's cache for the few tokens they share
    (a BOS and a turn header); else, as llama-server does, the slot sharing a tenth of it, or the least
    recently used."""
    shared = {id(s): common_prefix(s.held, prompt) for s in idle}
    best = max(idle, key=lambda s: (shared[id(s)], -s.last_used))
    if 2 * shared[id(best)] >= len(prompt):
        return best
    empty = [s for s in idle if not s.held]
    if empty:
        return empty[0]
    if 10 * shared[id(best)] >= len(prompt):
        return best
    return min(idle, key=lambda s: s.last_used)


@dataclass(frozen=True)
class EngineRequest:
    """A generation for the batch engine: prompt tokens and how to sample them."""

    id: int
    prompt: tuple[int, ...]
    params: SamplingParams
    extra_stop: tuple[str, ...] = ()
    thinking_budget: ThinkingBudget | None = None


@dataclass(frozen=True)
class EngineEvent:
    """Output of one step for one request: a chunk (the last has finish_reason), or an error."""

    request_id: int
    chunk: Chunk | None = None
    error: CandorError | None = None

    @property
    def final(self) -> bool:
        """Whether the request is over after this event."""
        return self.error is not None or (self.chunk is not None and self.chunk.finish_reason is not None)


@dataclass
class _Slot:
    seq: int
    held: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds, by position
    request: EngineRequest | None = None
    fed: int = 0  # prompt tokens decoded so far
    next_token: int | None = None  # sampled, not yet decoded
    sampler: SamplerChain | None = None
    out: TextOut | None = None
    cap: ThinkingCap | None = None  # the request's reasoning budget, when it has one
    output_index: int = -1  # row of this slot's logits in the current batch
    planned: int = 0  # prompt tokens of this slot in the current batch
    last_used: float = 0.0

    @property
    def active(self) -> bool:
        return self.request is not None


class BatchEngine:
    """Drives one context with several sequences. Not thread-safe: one loop owns it."""

    def __init__(self, model: NativeModel, config: ContextConfig, *, max_request_tokens: int) -> None:
        self.model = model
        self.context = NativeContext(model, config)
        self.max_request_tokens = min(max_request_tokens, self.context.n_ctx)
        self.slots = [_Slot(seq) for seq in range(config.n_seq_max)]
        self.waiting: deque[EngineRequest] = deque()
        self._batch_budget = config.n_batch

    # -- requests ------------------------------------------------------------------------------------

    def submit(self, request: EngineRequest) -> EngineEvent | None:
        """Queue a request; an immediate error event when it can never run."""
        if not request.prompt:
            return EngineEvent(request.id, error=InvalidParameter("the prompt is empty; give some text"))
        try:
            self.model.check_generates()
        except CandorError as exc:
            return EngineEvent(request.id, error=exc)
        if len(request.prompt) >= self.max_request_tokens:
            return EngineEvent(
                request.id,
                error=ContextOverflow(
                    overflow_message(len(request.prompt), self.max_request_tokens, self.model)
                ),
            )
        self.waiting.append(request)
        return None

    def cancel(self, request_id: int) -> bool:
        """Drop a request, waiting or running; its slot is free at once. False if unknown."""
        for request in self.waiting:
            if request.id == request_id:
                self.waiting.remove(request)
                return True
        for slot in self.slots:
            if slot.request is not None and slot.request.id == request_id:
                self._release(slot)
                return True
        return False

    @property
    def busy(self) -> bool:
        """Whether a step would do work."""
        return bool(self.waiting) or any(s.active for s in self.slots)

    @property
    def free_slots(self) -> int:
        """Slots that no running or waiting request will take."""
        return max(0, len(self.slots) - self.active_count - len(self.waiting))

    @property
    def active_count(self) -> int:
        """Slots running a request."""
        return sum(1 for s in self.slots if s.active)

    def close(self) -> None:
        """Free samplers and the context."""
        for slot in self.slots:
            self._release(slot)
        self.context.close()

    def warm_up(self, tokens_per_slot: int = WARM_UP_TOKENS) -> None:
        """Decode and sample one throwaway batch shaped like a burst (every slot reading a short prompt),
        then forget it.

        The first step of that shape touches compute-buffer, logits and sampler memory (each chain keeps
        an n_vocab candidate array) for the first time; on huge pages each first touch also finds and
        clears a 2 MiB page. Paid here, at load (about 0.15 s on the default model with 8 slots), instead
        of by the first requests that arrive together: in a fresh server the step reading 8 prompts took
        219 ms without this and 190 ms with it, as long as it takes once the server is warm.
        """
        n = max(1, min(tokens_per_slot, self.context.config.n_batch // len(self.slots)))
        token = self.model.bos if self.model.bos >= 0 else 0
        batch = self.context.batch
        batch.clear()
        for slot in self.slots:
            for pos in range(n):
                batch.add(token, pos, slot.seq, pos == n - 1)
        try:
            status = self.context.decode()
        except EngineError:  # best effort: a model that cannot take this batch fails on its requests
            status = -1
        if status == 0:
            # Every chain keeps its own n_vocab candidate array: all of them live at once, as in a burst.
            vocab = self.model.vocab
            samplers = [SamplerChain(SamplingParams(), self.model.n_vocab, vocab) for _ in self.slots]
            try:
                for k, sampler in enumerate(samplers):
                    sampler.sample(self.context, k * n + n - 1)  # the batch index of the slot's last token
            finally:
                for sampler in samplers:
                    sampler.close()
        batch.clear()
        self.context.clear()

    # -- the step ------------------------------------------------------------------------------------

    def step(self) -> list[EngineEvent]:
        """Admit waiting requests, decode one batch, sample every slot that has logits."""
        events: list[EngineEvent] = self._admit()
        if not self._fill_batch():
            return events
        status = self.context.decode()
        while status == DECODE_NO_KV_SLOT:
            events.extend(self._make_room())
            if not self._fill_batch():
                return events
            status = self.context.decode()
        self._commit_batch()
        for slot in self.slots:
            if slot.request is None or slot.output_index < 0:
                continue
            events.extend(self._sample(slot))
        return events

    def _admit(self) -> list[EngineEvent]:
        refused: list[EngineEvent] = []
        reading = sum(1 for s in self.slots if s.request is not None and s.next_token is None)
        while self.waiting:
            idle = [s for s in self.slots if not s.active]
            if not idle:
                break
            request = self.waiting.popleft()
            try:
                sampler = SamplerChain(request.params, self.model.n_vocab, self.model.vocab)
            except CandorError as exc:  # e.g. a grammar that does not parse: this request only
                refused.append(EngineEvent(request.id, error=exc))
                continue
            slot = choose_slot(idle, request.prompt)
            # With other prompts read in this step, a short shared prefix is read again (an even run).
            together = reading + min(len(self.waiting), len(idle) - 1) > 0
            minimum = MIN_REUSE_BESIDE_OTHERS if together else 1
            keep = self.context.reuse_prefix(slot.seq, slot.held, request.prompt, minimum=minimum)
            reading += 1
            slot.request = request
            slot.fed = keep
            slot.next_token = None
            slot.sampler = sampler
            slot.out = TextOut(self.model, request.params, request.extra_stop)
            budget = request.thinking_budget
            slot.cap = ThinkingCap(self.model, budget) if budget is not None else None
            slot.out.cached_tokens = keep
        return refused

    def _fill_batch(self) -> bool:
        """Put every decoding slot's next token and the prompt chunks into the batch; False if empty.

        With one KV stream per slot, llama.cpp cuts a batch into runs of consecutive sequence ids that
        take the same number of tokens each, and every run is a pass over the weights. So tokens go in
        sequence order, and the chunks are chosen to keep the runs few (see _chunks).
        """
        batch = self.context.batch
        batch.clear()
        decoding = sum(1 for s in self.slots if s.request is not None and s.next_token is not None)
        chunks = self._chunks(decoding)
        budget = self._batch_budget - decoding
        for slot in self.slots:
            slot.output_index = -1
            slot.planned = 0
            request = slot.request
            if request is None:
                continue
            if slot.next_token is not None:
                slot.output_index = batch.n_tokens
                batch.add(slot.next_token, len(slot.held), slot.seq, True)
                continue
            end = min(len(request.prompt), slot.fed + min(budget, chunks[slot.seq]))
            for pos in range(slot.fed, end):
                last = pos == len(request.prompt) - 1
                if last:
                    slot.output_index = batch.n_tokens
                batch.add(request.prompt[pos], pos, slot.seq, last)
            slot.planned = max(0, end - slot.fed)
            budget -= slot.planned
        return batch.n_tokens > 0

    def _chunks(self, decoding: int) -> dict[int, int]:
        """How many prompt tokens each reading slot takes this step (before the batch budget).

        Prompts read together whose lengths are within TRICKLE of a common length are made to end in one
        pass, where all their first tokens are computed at once: each output row is a product with the
        whole vocabulary matrix, and rows left for passes of their own cost nearly a decode step.
        - A burst into an idle engine (no slot decoding, no prompt much longer): the common length is the
          shortest near the median; the longer ones first read their extra tokens, a small pass without
          outputs, then all read the common length together. On the default model, 8 prompts of 17 and
          18 tokens read whole took 185-193 ms (8x17 tokens, then the six 18th tokens with their
          outputs); extra tokens first, 160 ms (10 + 150).
        - Otherwise (beside decoding slots, or a long prompt): the longer ones are cut to the median
          length, and what is left of them goes one token a step beside the decoding slots, inside their
          pass, rather than in passes of its own. 8 prompts of 15-18 tokens read whole took 185 ms, cut
          to 15 each 129 ms.
        A much shorter prompt (a reused prefix) or a much longer one is read whole.
        """
        left = {
            s.seq: len(s.request.prompt) - s.fed
            for s in self.slots
            if s.request is not None and s.next_token is None
        }
        if not left:
            return {}
        lengths = sorted(left.values())
        median = lengths[(len(lengths) - 1) // 2]  # a short outlier (a reused prefix) does not set it
        shortest = min(n for n in lengths if n >= median - TRICKLE)
        # Only near-equal prompts into an idle engine: beside a long prompt the step is long, and a prompt
        # made to wait one would wait for all of it.
        burst = not decoding and lengths[-1] <= shortest + TRICKLE
        # Cut to the median otherwise: a prompt cut shorter would trickle its rest over more steps.
        common = shortest if burst else median
        longer = {seq for seq, n in left.items() if common < n <= common + TRICKLE}
        chunks = {}
        for seq, n in left.items():
            if decoding and n <= TRICKLE:
                chunks[seq] = 1
            elif seq in longer:
                chunks[seq] = n - common if burst else common
            elif n == common and longer and burst:
                chunks[seq] = 0  # waits one small pass for the longer ones' extra tokens
            else:
                chunks[seq] = n
        return chunks

    def _commit_batch(self) -> None:
        """Record what the successful decode put into each slot's KV."""
        for slot in self.slots:
            request = slot.request
            if request is None:
                continue
            if slot.next_token is not None:
                slot.held.append(slot.next_token)
            elif slot.planned:
                slot.held.extend(request.prompt[slot.fed : slot.fed + slot.planned])
                slot.fed += slot.planned
                if slot.fed == len(request.prompt):  # read: its window is what the next turn reuses
                    self.context.checkpoint(slot.seq)

    def _sample(self, slot: _Slot) -> list[EngineEvent]:
        request, sampler, out = slot.request, slot.sampler, slot.out
        assert request is not None and sampler is not None and out is not None
        cap = slot.cap
        if cap is not None and cap.forced:  # the reasoning budget ran out: the close tag, not a sample
            token = cap.forced.popleft()
            sampler.accept(token)
        else:
            token = sampler.sample(self.context, slot.output_index)
        if cap is not None:
            cap.saw(token)
        logprob = None
        if request.params.logprobs is not None:
            logprob = token_logprob(
                self.model, self.context.logits(slot.output_index), token, request.params.logprobs
            )
        events = []
        chunk = out.accept(token, logprob)
        if chunk is not None:
            events.append(EngineEvent(request.id, chunk))
        if out.finish is None and len(slot.held) >= self.max_request_tokens:
            out.finish = FinishReason.LENGTH
        if out.finish is not None:
            events.append(EngineEvent(request.id, out.final(len(request.prompt))))
            self._release(slot)
        else:
            slot.next_token = token
        return events

    def _release(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        slot.request = slot.sampler = slot.out = slot.cap = None
        slot.next_token = None
        slot.output_index = -1
        slot.last_used = time.monotonic()

    def _make_room(self) -> list[EngineEvent]:
        """The KV cache is full: drop idle slots' cached prefixes first, then end the longest request."""
        idle_with_kv = [s for s in self.slots if not s.active and s.held]
        if idle_with_kv:
            for slot in idle_with_kv:
                self.context.forget(slot.seq, 0)
                slot.held.clear()
            return []
        running = [s for s in self.slots if s.active]
        if not running:
            raise EngineError("llama.cpp found no KV room for an empty batch")
        victim = max(running, key=lambda s: len(s.held))
        request, out = victim.request, victim.out
        assert request is not None and out is not None
        if victim.next_token is None:  # still reading its prompt: it can never fit beside the others
            event = EngineEvent(
                request.id,
                error=ContextOverflow(
                    "the KV cache is full with other requests' context; retry, "
                    "or load the model with a larger context"
                ),
            )
        else:
            event = EngineEvent(request.id, out.final(len(request.prompt), FinishReason.LENGTH))
        self._release(victim)
        self.context.forget(victim.seq, 0)
        victim.held.clear()
        return [event]
