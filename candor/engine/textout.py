"""One sequence's output: sampled tokens -> whole UTF-8 text, stop strings cut, limits, final usage."""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence

from candor.engine.native_model import NativeModel
from candor.textstream import StopMatcher
from candor.types import Chunk, FinishReason, SamplingParams, Timings, TokenLogprob, Usage


def control_stops(model: NativeModel, stops: Sequence[str]) -> dict[int, str]:
    """The stop strings that are one control token (`<start_of_turn>`), by token: only its id can match."""
    found: dict[int, str] = {}
    for stop in stops:
        tokens = model.tokenize(stop, add_special=False, parse_special=True)
        if len(tokens) == 1 and not model.piece(tokens[0]):
            found.setdefault(tokens[0], str(stop))
    return found


class TextOut:
    """Feed it each sampled token; it says what text to emit and when the sequence is finished."""

    def __init__(self, model: NativeModel, params: SamplingParams, extra_stop: Sequence[str] = ()) -> None:
        self._model = model
        self._ignore_eos = params.ignore_eos
        self._limit = params.max_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = (*params.stop, *extra_stop)
        self._stops = StopMatcher(stops)
        self._stop_tokens = control_stops(model, stops)
        self._stopped = False
        self.generated: list[int] = []
        self.pending: list[int] = []  # tokens whose text has not been emitted yet
        self.pending_logprobs: list[TokenLogprob] = []  # theirs, when the request asked for them
        self.finish: FinishReason | None = None
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.stop_string: str | None = None  # the stop string that ended the text, if one did
        self.cached_tokens = 0  # prompt tokens whose KV an earlier request left (the prefix cache)

    def accept(self, token: int, logprob: TokenLogprob | None = None) -> Chunk | None:
        """Take one sampled token; return a chunk when there is text to emit. Sets `finish` when done."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if not self._ignore_eos and self._model.is_eog(token):
            self.finish = FinishReason.STOP
            return None
        if token in self._stop_tokens:  # a stop string that is one control token, which renders as nothing
            text, hit = self._stops.flush(), True
            self.stop_string = self._stop_tokens[token]
        else:
            self.generated.append(token)
            self.pending.append(token)
            if logprob is not None:
                self.pending_logprobs.append(logprob)
            text, hit = self._stops.push(self._utf8.decode(self._model.piece(token)))
            self.stop_string = self._stops.matched
        if hit:
            self._stopped = True
            self.finish = FinishReason.STOP
        elif self._limit is not None and len(self.generated) >= self._limit:
            self.finish = FinishReason.LENGTH
        if not text and not hit:
            return None
        chunk = Chunk(text, tuple(self.pending), logprobs=tuple(self.pending_logprobs))
        self.pending = []
        self.pending_logprobs = []
        return chunk

    def final(self, prompt_tokens: int, finish: FinishReason | None = None) -> Chunk:
        """The last chunk: text held back for a stop string that never completed, usage and timings."""
        reason = finish or self.finish or FinishReason.LENGTH
        tail = ""
        if not self._stopped:
            tail, hit = self._stops.push(self._utf8.decode(b"", final=True))
            tail += "" if hit else self._stops.flush()
            self.stop_string = self._stops.matched if hit else self.stop_string
        now = time.perf_counter()
        first = self.first_token_at if self.first_token_at is not None else now
        return Chunk(
            tail,
            tuple(self.pending),
            logprobs=tuple(self.pending_logprobs),
            finish_reason=reason,
            usage=Usage(
                prompt_tokens, len(self.generated), cached_tokens=min(self.cached_tokens, prompt_tokens)
            ),
            timings=Timings(prompt_seconds=first - self.started, decode_seconds=now - first),
            stop=self.stop_string if reason is FinishReason.STOP else None,
        )
