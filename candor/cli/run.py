"""`candor run`: stream a model's answer to one prompt, or chat with it interactively."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from candor.cli import repl
from candor.cli.stats import print_stats
from candor.model import Model, load
from candor.types import Chunk, Message, SamplingParams

EXAMPLES = """examples:
  candor run                                   chat with the embedded default model
  candor run "Why is the sky blue?"            one answer from the default model
  candor run ./qwen2.5-0.5b-q4_k_m.gguf --temperature 0 "2+2="
  echo "The quick brown fox" | candor run --raw --max-tokens 20
"""


def register(sub: Any) -> None:
    """Add the `run` command."""
    parser = sub.add_parser(
        "run",
        help="run a model on a prompt, or chat with it",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "words",
        nargs="*",
        metavar="[MODEL] [PROMPT]",
        help="a .gguf path or model name (default: the embedded model), then the prompt; "
        "a first word with spaces in it is the prompt",
    )
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--temperature", type=float, help="randomness; 0 = always the likeliest token (0.8)")
    parser.add_argument("--top-k", type=int, help="sample among the K likeliest tokens (40; 0 = all)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold (0.95)")
    parser.add_argument("--min-p", type=float, help="drop tokens below this fraction of the top one (0.05)")
    parser.add_argument("--repeat-penalty", type=float, help="penalise repeated tokens (1.0 = off)")
    parser.add_argument("--seed", type=int, help="random seed, for repeatable output")
    parser.add_argument("--max-tokens", type=int, help="stop after this many tokens")
    parser.add_argument("--ctx", type=int, help="context window in tokens (CANDOR_CTX, 4096)")
    parser.add_argument("--threads", type=int, help="CPU threads (CANDOR_THREADS)")
    parser.add_argument("--verbose", action="store_true", help="print timings and tokens/s after each answer")
    parser.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    parser.set_defaults(handler=handle)


def split_words(words: list[str]) -> tuple[str | None, str]:
    """Split positional words into (MODEL, PROMPT): a model reference never contains whitespace."""
    if words and not any(ch.isspace() for ch in words[0]) and len(words) > 1:
        return words[0], " ".join(words[1:])
    if len(words) == 1 and not any(ch.isspace() for ch in words[0]) and _looks_like_model(words[0]):
        return words[0], ""
    return None, " ".join(words)


def _looks_like_model(word: str) -> bool:
    from candor.defaults import DEFAULT_MODEL_ALIASES

    return word.endswith(".gguf") or "/" in word or ":" in word or word in DEFAULT_MODEL_ALIASES


def sampling_from(args: argparse.Namespace) -> SamplingParams:
    """SamplingParams from the command-line flags (unset flags keep the defaults)."""
    return SamplingParams().with_overrides(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
        max_tokens=args.max_tokens,
    )


def handle(args: argparse.Namespace) -> int:
    """Run one prompt, or start the interactive chat when stdin is a terminal and no prompt is given."""
    model_ref, prompt = split_words(args.words)
    params = sampling_from(args)
    piped = "" if sys.stdin.isatty() else sys.stdin.read()
    if piped.strip():
        prompt = f"{prompt}\n\n{piped}" if prompt else piped
    with load(model_ref, ctx=args.ctx, threads=args.threads) as model:
        if not prompt.strip() and sys.stdin.isatty():
            return repl.chat_loop(model, params, system=args.system, raw=args.raw, verbose=args.verbose)
        if not prompt.strip():
            print("Error: the prompt is empty; pass it as an argument or on stdin", file=sys.stderr)
            return 1
        disclose_fallback(model, raw=args.raw)
        if args.raw:
            stream = model.generate(prompt, params=params)
        else:
            messages = [Message("system", args.system)] if args.system else []
            stream = model.chat([*messages, Message("user", prompt)], params=params)
        last = write_stream(stream, sys.stdout)
        if args.verbose and last is not None:
            print_stats(last, sys.stderr)
    return 0


def disclose_fallback(model: Model, *, raw: bool) -> None:
    """Say once, on stderr, when the model chats through a fallback format rather than its own template."""
    if not raw and model.chat_format.is_fallback:
        print(f"note: {model.card.name or model.path.name}: {model.chat_format.describe()}", file=sys.stderr)


def write_stream(stream: Any, out: TextIO) -> Chunk | None:
    """Print chunks as they arrive; return the last (which carries usage and timings)."""
    last: Chunk | None = None
    for chunk in stream:
        if chunk.text:
            out.write(chunk.text)
            out.flush()
        last = chunk
    out.write("\n")
    out.flush()
    return last
