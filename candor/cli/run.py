"""`candor run`: stream a model's answer to one prompt, or chat with it interactively.

A prompt, or the chat, goes through a running `candor serve` when there is one (the model stays loaded
there for the next run); without one, with --local, or for a .gguf path, the model is loaded in this
process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from candor.cli import repl
from candor.cli.chat_backends import ChatBackend, LocalChat, ServerChat, final_chunk
from candor.cli.server_option import add_host_option, required_server
from candor.cli.stats import print_stats
from candor.client import running_server, server_url, stream
from candor.default_model import DEFAULT_MODEL_NAME
from candor.errors import InvalidParameter
from candor.types import Chunk, Message, SamplingParams

if TYPE_CHECKING:  # loading llama.cpp is for running a model, not for `candor --help`
    from candor.model import Model

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
    parser.add_argument(
        "--repeat-penalty",
        type=float,
        help="penalise repeated tokens (1.0 = off; 1.1 for a model without a chat template)",
    )
    parser.add_argument(
        "--repeat-last-n", type=int, help="how many recent tokens the penalty looks at (64; -1 = all)"
    )
    parser.add_argument("--seed", type=int, help="random seed, for repeatable output")
    parser.add_argument(
        "--max-tokens",
        type=int,
        help="stop after this many tokens (-1 = no limit; 256 for a model without a chat template)",
    )
    parser.add_argument("--ctx", type=int, help="context window in tokens (CANDOR_CTX, 4096)")
    parser.add_argument("--threads", type=int, help="CPU threads (CANDOR_THREADS)")
    parser.add_argument("--verbose", action="store_true", help="print timings and tokens/s after each answer")
    parser.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    parser.add_argument(
        "--local",
        action="store_true",
        help="load the model in this process even when a candor server is running",
    )
    add_host_option(parser, what="run on the candor server there, which must be running")
    parser.set_defaults(handler=handle)


def split_words(words: list[str]) -> tuple[str | None, str]:
    """Split positional words into (MODEL, PROMPT): a model reference never contains whitespace."""
    if words and not any(ch.isspace() for ch in words[0]) and len(words) > 1:
        return words[0], " ".join(words[1:])
    if len(words) == 1 and not any(ch.isspace() for ch in words[0]) and _looks_like_model(words[0]):
        return words[0], ""
    return None, " ".join(words)


def _looks_like_model(word: str) -> bool:
    from candor.default_model import DEFAULT_MODEL_ALIASES

    return word.endswith(".gguf") or "/" in word or ":" in word or word in DEFAULT_MODEL_ALIASES


def sampling_from(args: argparse.Namespace, base: SamplingParams | None = None) -> SamplingParams:
    """The command-line flags on top of `base`, the model's defaults (unset flags keep them)."""
    return (base or SamplingParams()).with_overrides(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        seed=args.seed,
        max_tokens=args.max_tokens,
    )


def handle(args: argparse.Namespace) -> int:
    """Run one prompt, or start the interactive chat when stdin is a terminal and no prompt is given."""
    model_ref, prompt = split_words(args.words)
    sampling_from(args)  # a bad flag fails before a model loads
    piped = "" if sys.stdin.isatty() else sys.stdin.read()
    if piped.strip():
        prompt = f"{prompt}\n\n{piped}" if prompt else piped
    if args.ctx is not None and args.ctx < 1:
        raise InvalidParameter(f"ctx must be a whole number of at least 1; got {args.ctx}")
    interactive = not prompt.strip() and sys.stdin.isatty()
    if not prompt.strip() and not interactive:
        print("Error: the prompt is empty; pass it as an argument or on stdin", file=sys.stderr)
        return 1
    if args.host and (args.local or _is_path(model_ref)):
        raise InvalidParameter(
            "--host runs a stored model on a server; drop it to load a .gguf path or --local"
        )
    base = None if args.local or _is_path(model_ref) else running_server(server_url(args.host))
    if base is None and args.host:
        required_server(args.host)  # says that none answers there, and how to start one
    if base is not None and interactive:
        return chat(ServerChat(base, model_ref or DEFAULT_MODEL_NAME), args, server_options(args))
    if base is not None:
        return run_on_server(base, model_ref, prompt, args)
    from candor.model import load

    with load(model_ref, ctx=args.ctx, threads=args.threads) as model:
        if interactive:
            return chat(LocalChat(model), args)
        disclose_fallback(model, raw=args.raw)
        if args.raw:
            stream = model.generate(prompt, params=sampling_from(args, model.defaults))
        else:
            messages = [Message("system", args.system)] if args.system else []
            params = sampling_from(args, model.chat_defaults)
            stream = model.chat([*messages, Message("user", prompt)], params=params)
        last = write_stream(stream, sys.stdout)
        if args.verbose and last is not None:
            print_stats(last, sys.stderr)
    return 0


def chat(backend: ChatBackend, args: argparse.Namespace, options: dict[str, Any] | None = None) -> int:
    """The interactive chat, with the flags' settings (`options`: those the user set, for a server)."""
    session = repl.ChatSession(
        backend,
        sampling_from(args, backend.defaults(args.raw)),
        options=options,
        system=args.system,
        raw=args.raw,
        verbose=args.verbose,
        out=sys.stdout,
    )
    return repl.chat_loop(session)


def _is_path(model_ref: str | None) -> bool:
    """A file the user names is loaded here: the server takes model names, never paths."""
    if model_ref is None:
        return False
    return (
        model_ref.endswith(".gguf")
        or model_ref.startswith(("/", "./", "../", "~"))
        or Path(model_ref).expanduser().is_file()
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as the request's Ollama options (unset flags are left to the model's defaults)."""
    values = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "repeat_last_n": args.repeat_last_n,
        "seed": args.seed,
        "num_predict": args.max_tokens,
        "num_ctx": args.ctx,
    }
    return {k: v for k, v in values.items() if v is not None}


def run_on_server(base: str, model_ref: str | None, prompt: str, args: argparse.Namespace) -> int:
    """Stream the answer from the running server: /api/generate for --raw, /api/chat otherwise."""
    model = model_ref or DEFAULT_MODEL_NAME
    if args.threads is not None:
        print(
            f"note: the candor server at {base} uses its own threads; --threads applies with --local",
            file=sys.stderr,
        )
    body: dict[str, Any] = {"model": model, "options": server_options(args), "stream": True}
    if args.raw:
        body.update(prompt=prompt, raw=True)
        lines = stream(base, "/api/generate", body)
    else:
        system = [{"role": "system", "content": args.system}] if args.system else []
        body["messages"] = [*system, {"role": "user", "content": prompt}]

        def disclose(headers: Mapping[str, str]) -> None:
            fmt = headers.get("x-candor-chat-format", "")
            if fmt.startswith("fallback"):
                name = fmt.partition(";")[2].strip()
                print(
                    f"note: {model}: no chat template of its own; fallback chat format '{name}'",
                    file=sys.stderr,
                )

        lines = stream(base, "/api/chat", body, on_headers=disclose)
    last = write_lines(lines, sys.stdout, sys.stderr)
    if args.verbose and last is not None:
        print_stats(last, sys.stderr)
    return 0


def write_lines(lines: Any, out: TextIO, err: TextIO) -> Chunk | None:
    """Print a server's NDJSON answer as it arrives (reasoning on `err`); return its counters as a Chunk."""
    last: Chunk | None = None
    for line in lines:
        message = line.get("message") or {}
        if message.get("thinking"):
            err.write(message["thinking"])
            err.flush()
        text = line.get("response") if "response" in line else message.get("content")
        if text:
            out.write(text)
            out.flush()
        if line.get("done"):
            last = final_chunk(line)
    out.write("\n")
    out.flush()
    return last


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
