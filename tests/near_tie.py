"""Comparing greedy answers that llama.cpp computed in different batch shapes (a batch of sequences or one
alone, a whole prompt or a reused prefix and its last token, another build): the same up to a near-tie."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from candor.types import TokenLogprob

# llama.cpp's kernels follow batch shape (vec_dot or tinyBLAS/repacked gemm; F16 or F32 flash attention) and
# re-quantize each matmul's input: logit gaps in the top 20 moved by up to 1.08 (AVX-512, AVX2; bugs: 1.65+).
NEAR_TIE = 1.5


@dataclass(frozen=True)
class Greedy:
    """A greedy answer as a test sees it: each token's bytes, and at each step the likeliest tokens'
    log-probabilities (or logits: only differences within one step are compared)."""

    pieces: tuple[bytes, ...]
    tops: tuple[Mapping[bytes, float], ...]
    ended: bool = False  # it ended by itself (end of generation, stop), not at the token limit
    text: str | None = None  # the answer as its API gave it: a stop string may cut it within a token

    @classmethod
    def of(cls, logprobs: Sequence[TokenLogprob], *, ended: bool = False, text: str | None = None) -> Greedy:
        """From candor's own log-probabilities (SamplingParams.logprobs, 2 or more)."""
        return cls(tuple(e.piece for e in logprobs), tuple(ranked(e.top) for e in logprobs), ended, text)

    @classmethod
    def of_api(cls, entries: Sequence[Any], *, ended: bool = False, text: str | None = None) -> Greedy:
        """From an API's logprobs entries (OpenAI's chat `content`; Ollama's `logprobs`, as JSON to keep
        `bytes`, which the ollama client drops), each with its `top_logprobs`."""

        def field(entry: Any, name: str) -> Any:
            return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)

        def key(entry: Any) -> bytes:
            raw = field(entry, "bytes")
            return bytes(raw) if raw is not None else str(field(entry, "token")).encode()

        def top(entry: Any) -> dict[bytes, float]:
            return ranked((key(t), float(field(t, "logprob"))) for t in field(entry, "top_logprobs") or [])

        return cls(tuple(key(e) for e in entries), tuple(top(e) for e in entries), ended, text)


def ranked(top: Iterable[tuple[bytes, float]]) -> dict[bytes, float]:
    """Pieces to log-probabilities; of tokens that share a piece (control tokens all show as b"") the
    likeliest."""
    out: dict[bytes, float] = {}
    for piece, logprob in top:
        out[piece] = max(logprob, out.get(piece, logprob))
    return out


def check_near_tie(run: Greedy, step: int, other: bytes) -> None:
    """At `step` another computation chose `other` (b"": it ended there, control tokens show as nothing)
    where `run` chose its own token: that must have been a near-tie in `run` too."""
    top = run.tops[step]
    best = top[run.pieces[step]]
    assert other in top, f"step {step}: {other!r} is not among the other computation's likeliest {list(top)}"
    gap = best - top[other]
    assert gap < NEAR_TIE, f"step {step}: {run.pieces[step]!r} led {other!r} by {gap:.3f} logits"


def check_drift(step: int, chosen: bytes, a: Mapping[bytes, float], b: Mapping[bytes, float]) -> None:
    """One step computed twice: the likeliest tokens' log-probabilities, relative to the `chosen` token's,
    differ by less than NEAR_TIE (a real bug, such as attending to the wrong KV, moves them by several)."""
    assert chosen in a and chosen in b, f"step {step}: {chosen!r} is not among both computations' likeliest"
    for piece in a.keys() & b.keys():
        drift = (a[piece] - a[chosen]) - (b[piece] - b[chosen])
        assert abs(drift) < NEAR_TIE, f"step {step}: {piece!r} moved by {drift:.3f} against {chosen!r}"


def assert_same_up_to_a_near_tie(a: Greedy, b: Greedy) -> int:
    """Two greedy computations of the same prompt agree: at each step until they part and at that step,
    the likeliest tokens' log-probabilities agree (check_drift), and where they part each chose a token
    the other ranked within NEAR_TIE of its own. Return the step where they parted (or their length)."""
    n = min(len(a.pieces), len(b.pieces))
    k = next((i for i in range(n) if a.pieces[i] != b.pieces[i]), n)
    for i in range(k):
        check_drift(i, a.pieces[i], a.tops[i], b.tops[i])
    if k < n:
        check_near_tie(a, k, b.pieces[k])
        check_near_tie(b, k, a.pieces[k])
        check_drift(k, a.pieces[k], a.tops[k], b.tops[k])
    elif len(a.pieces) != len(b.pieces):
        shorter, longer = (a, b) if len(a.pieces) < len(b.pieces) else (b, a)
        assert shorter.ended, f"one answer stopped at {n} tokens, short of the token limit"
        check_near_tie(longer, n, b"")
    return k


def assert_text_same_up_to_a_near_tie(text: str, run: Greedy) -> None:
    """A text (shown by a client) is `run`'s answer up to a near-tie: it goes on token by token as `run`
    did, until it goes on with another token that `run` ranked within NEAR_TIE of its own, or ends
    where `run` nearly ended. Leading and trailing whitespace are not compared."""
    if run.text is not None and text.strip() == run.text.strip():
        return  # the same answer (compared token by token, a stop string cut within a token ends it early)
    data = text.strip().encode()
    whole = b"".join(run.pieces)
    lead = len(whole) - len(whole.lstrip())
    body = whole.strip()
    pos = start = 0  # data and body agree up to pos; run's token `step` starts at `start` in whole
    for step, piece in enumerate(run.pieces):
        own = body[max(start - lead, 0) : max(start + len(piece) - lead, 0)]
        start += len(piece)
        if not own:  # whitespace that the stripped answer has not
            continue
        if data.startswith(own, pos):
            pos += len(own)
            continue
        rest = data[pos:]
        if not rest:
            check_near_tie(run, step, b"")  # the text ended here
            return
        tops = run.tops[step]
        near = [p for p in tops if p and p != piece and rest.startswith(p.rstrip() if p.strip() else p)]
        assert near, f"step {step}: the text goes on with {rest[:20]!r}, not one of {list(tops)}"
        gap = tops[piece] - max(tops[p] for p in near)
        assert gap < NEAR_TIE, f"step {step}: {piece!r} led the text's {near} by {gap:.3f} logits"
        return
    assert pos == len(data), f"the text goes on past the answer: {data[pos:]!r}"
