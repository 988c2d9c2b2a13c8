#!/usr/bin/env python3
"""Two agent loops over Anthropic's Messages API: `candor serve` against llama-server, alternating.

Each loop is an agent at work (issue 16, "contexts that hold an agent"): its own ~20,000-token system
prompt (documentation-like text from harness.document(), distinct per loop), two tools, and 5 turns
through `/v1/messages` with the `anthropic` SDK, streamed. Every turn asks for a tool call
(`tool_choice: {"type": "any"}`, max_tokens 48); the client appends the assistant's content as returned
and answers each tool_use with a scripted tool_result (documentation text again, ~300 tokens; a turn
that ended without a call gets the same text as a user turn, so both servers read the same new text
each turn whatever they answered). One turn
(the 3rd) is `tool_choice: auto` with max_tokens 600, after a tool result asking for a long summary, so
that an answer can run past the model's 512-token sliding window. Temperature 0 on both servers. The two
loops are interleaved turn by turn (A1 B1 A2 B2 ...), so each server must keep both prefixes at once in
its 2 slots; `--concurrent` runs them at the same time instead.

Measured per turn: time to first token (TTFT: the first content_block_start or content_block_delta event
the client receives), the turn's total time, the prompt tokens and the part of them read from cache
(usage: llama-server's `input_tokens` excludes cached tokens, candor's counts the whole prompt; both
are printed as "prompt" and "cached"), and the output tokens. The total is the wall time of all turns
of both loops. Ratios candor/llama-server are per run, with their spread over runs.

Both servers: the same model file, 2 slots, the same context per slot (`--ctx`, 24,576: candor's
CANDOR_CTX is per slot, llama-server's `-c` is the total, so it gets `-c 2*ctx -np 2 --no-kv-unified`,
one KV stream per slot as candor's runner has) and the same threads. Each server is started fresh for
each run and warmed with one short request. llama-server runs in one or more configurations
(`--llama-configs`), each with its own prefix reuse on:

- `swa-full`: `--swa-full --cache-reuse 256`. The sliding-window layers keep a full-size cache
  (llama.cpp's library default; candor's contexts had it before context checkpoints), so any cached
  prefix can be reused; `--cache-reuse 256` also reuses shifted chunks of at least 256 tokens.
- `checkpoints`: `--ctx-checkpoints 32 --cache-reuse 256`, llama-server's default SWA cache (only the
  last 512 + n_ubatch positions of the sliding-window layers) with context checkpoints (32 per slot,
  llama-server's default count, taken at user-message starts), which it restores to reuse a prefix
  that the rolling window has moved past, as candor's contexts now do with one checkpoint per request.
  (`--cache-reuse` needs a shiftable cache; llama-server may log that it ignores it here.)

Both also keep llama-server's defaults for `--cache-ram` (8,192 MiB host prompt cache) and `--jinja`
(passed explicitly).

Tool calls on llama-server. The default model (gemma-3-270m, a base model) has no chat template in its
file. candor renders it with its built-in Gemma format and describes the tools in the system turn in
the generic call format (`{"name": ..., "arguments": {...}}`). llama-server on its own would fall back
to ChatML, and its chat-template analysis (the "autoparser") finds no tool support in a template that
does not render tools: it would ignore `tools` and `tool_choice` altogether. So llama-server is given
LLAMA_SERVER_TEMPLATE (`--chat-template-file`): candor's Gemma format with the same tool description
text, which also renders past tool calls as that JSON so the autoparser recognises the format
(JSON_NATIVE). With it llama-server accepts `tool_choice: any` (`required`) and answers with tool_use
blocks. What stays different, and shows in the per-turn output:
- llama-server's required-call grammar lets free text come before the JSON call (the autoparser's
  JSON_NATIVE parser is optional content up to the first `{`, then the call); candor's grammar forces
  the call from the first token. So llama-server's tool turns may spend their max_tokens on text and
  end without a call (the per-turn lines show output tokens, stop reason and calls).
- Past calls and tool results: candor spells them out as JSON for a format that has no place for them
  (`{"name", "arguments"}` and `{"tool_response": ...}`); the template given to llama-server writes its
  own, so the prompts differ by a few tokens.
- candor sends a tool_use block whole when the call is complete, and with tools given it holds back
  the text of a reply until it knows the reply is not a call (the generic format: a reply that is
  exactly one JSON call is a call); llama-server streams text and a call's arguments as they are
  generated. So candor's TTFT includes the generation of the whole reply (its per-turn TTFT equals
  its turn time), llama-server's does not: compare the totals, and TTFTs knowing this.

    python benchmarks/bench_agent_loop.py [--runs 3] [--threads 2] [--llama-tools DIR]
        [--system-tokens 20000] [--turns 5] [--ctx 24576] [--llama-configs swa-full,checkpoints]

Smoke run (small): --runs 1 --system-tokens 1500 --ctx 4096 --long-max-tokens 100
Only the embedded default model is supported (the template given to llama-server is Gemma's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
from harness import document, find_llama_tools, free_port, spread, stop, tools_build, wait_ready

from candor.store import Store

SLOTS = 2
WORDS_PER_TOKEN = 0.63  # harness.document() text with the preamble: about 1.6 tokens a word (Gemma)
LONG_TURN = 3

# Tool schemas with their keys in sorted order: candor describes a tool with sorted keys, the template
# below writes them in the order llama-server passes them on; so both prompts read the same text.
TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a file of the project and return its text.",
        "input_schema": {
            "properties": {"path": {"description": "path relative to the project root", "type": "string"}},
            "required": ["path"],
            "type": "object",
        },
    },
    {
        "name": "search_docs",
        "description": "Search the reference manual and return the matching sections.",
        "input_schema": {
            "properties": {"query": {"description": "the words to look for", "type": "string"}},
            "required": ["query"],
            "type": "object",
        },
    },
]

LLAMA_CONFIGS = {
    "swa-full": ["--swa-full", "--cache-reuse", "256"],
    "checkpoints": ["--ctx-checkpoints", "32", "--cache-reuse", "256"],
}

# candor's built-in Gemma format (candor/prompt/fallbacks.py) plus the tool description candor adds to
# the system turn (candor/prompt/formats.py: with_tool_instructions), and past calls written as the JSON
# the model is asked for, which is what lets llama-server's autoparser find the call format.
LLAMA_SERVER_TEMPLATE = r"""{{- bos_token -}}
{%- set ns = namespace(listed='', calls='') -%}
{%- set note = '' -%}
{%- if tools -%}
    {%- for tool in tools -%}
        {%- set fn = tool['function'] if tool['function'] is defined else tool -%}
        {%- set ns.listed = ns.listed + '\n{"description": ' + (fn['description'] | tojson) + ', "name": '
            + (fn['name'] | tojson) + ', "parameters": ' + (fn['parameters'] | tojson) + '}' -%}
    {%- endfor -%}
    {%- set note = 'You can call these tools. To call one, answer with only a JSON object like '
        + '{"name": "TOOL_NAME", "arguments": {...}} and nothing else.' + ns.listed -%}
{%- endif -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] + ('\n\n' + note if note else '') -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system = note -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {%- if message['tool_calls'] is defined and message['tool_calls'] -%}
        {%- set ns.calls = '' -%}
        {%- for call in message['tool_calls'] -%}
            {%- set args = call['function']['arguments'] -%}
            {%- set ns.calls = ns.calls + '{"name": ' + (call['function']['name'] | tojson)
                + ', "arguments": ' + (args if args is string else args | tojson) + '}' -%}
        {%- endfor -%}
        {%- set content = ns.calls -%}
    {%- else -%}
        {%- set content = (message['content'] if message['content'] is string else '') | trim -%}
    {%- endif -%}
    {%- if loop.first and system -%}
        {%- if role == 'user' -%}
            {%- set content = system + '\n\n' + content -%}
        {%- else -%}
            {{- '<start_of_turn>user\n' + system + '<end_of_turn>\n' -}}
        {%- endif -%}
    {%- endif -%}
    {{- '<start_of_turn>' + role + '\n' + content + '<end_of_turn>\n' -}}
{%- else -%}
    {%- if system -%}
        {{- '<start_of_turn>user\n' + system + '<end_of_turn>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""


@dataclass
class Turn:
    """One request of one loop, as the client saw it."""

    loop: str
    turn: int
    ttft: float  # seconds to the first content event
    total: float  # seconds to the end of the stream
    prompt: int  # prompt tokens, cached ones included
    cached: int  # of them, read from the server's cache
    output: int
    stop: str
    calls: int  # tool_use blocks in the answer


@dataclass
class Loop:
    """One agent's conversation: its system prompt and the history so far (the seed picks its texts)."""

    name: str
    seed: int
    system: str
    messages: list[dict[str, Any]]


def new_loops(system_tokens: int) -> list[Loop]:
    """Two agents, each with its own system prompt and first request."""
    loops = []
    for name, seed in (("A", 101), ("B", 202)):
        manual = document(seed, int(system_tokens * WORDS_PER_TOKEN))
        system = (
            f"You are agent {name}, a coding agent working on the project whose manual follows. "
            "Work step by step and use the tools to read files and search the manual.\n\n" + manual
        )
        task = f"Agent {name}: find where the cache is flushed and why it times out, then fix it."
        loops.append(Loop(name, seed, system, [{"role": "user", "content": task}]))
    return loops


def tool_result(loop: Loop, turn: int, call: Any | None) -> str:
    """The scripted answer to a tool call (documentation text), the same on both servers whatever the
    call's arguments; before the long turn it ends with the request for a long summary."""
    head = f"Result of {call.name}:" if call is not None else "Result of the next step:"
    text = head + "\n" + document(loop.seed * 100 + turn, 200)
    if turn + 1 == LONG_TURN:
        text += "\n\nNow write a long, detailed summary of everything found so far, section by section."
    return text


def run_turn(
    url: str, model: str, loop: Loop, turn: int, args: argparse.Namespace, counts_cached: bool
) -> Turn:
    """Send the loop's next request, stream the answer, and append it and the client's reply."""
    long_turn = turn == LONG_TURN
    # A new connection each turn: llama-server's HTTP library may close a kept-alive connection just as
    # the next request goes out on it, and a retry would hide in the timing.
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=3600)
    started = time.perf_counter()
    first: float | None = None
    with (
        client,
        client.messages.stream(
            model=model,
            max_tokens=args.long_max_tokens if long_turn else args.tool_max_tokens,
            system=loop.system,
            tools=TOOLS,
            tool_choice={"type": "auto"} if long_turn else {"type": "any"},
            messages=loop.messages,
            extra_body={"temperature": 0},  # this SDK version no longer takes temperature as an argument
        ) as stream,
    ):
        for event in stream:
            if first is None and event.type in ("content_block_start", "content_block_delta"):
                first = time.perf_counter() - started
        message = stream.get_final_message()
        total = time.perf_counter() - started
    usage = message.usage
    cached = usage.cache_read_input_tokens or 0
    # llama-server's input_tokens leaves out the cached part (as Anthropic's does); candor's counts it
    prompt = usage.input_tokens + (cached if counts_cached else 0)
    calls = [block for block in message.content if block.type == "tool_use"]
    loop.messages.append(
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]}
    )
    if calls:
        results = [
            {"type": "tool_result", "tool_use_id": call.id, "content": tool_result(loop, turn, call)}
            for call in calls
        ]
        loop.messages.append({"role": "user", "content": results})
    else:  # no call (text, or cut by max_tokens): the same scripted text comes back as a user turn
        loop.messages.append({"role": "user", "content": tool_result(loop, turn, None)})
    return Turn(
        loop.name,
        turn,
        first if first is not None else total,
        total,
        prompt,
        cached,
        usage.output_tokens,
        str(message.stop_reason),
        len(calls),
    )


def run_loops(
    url: str, model: str, args: argparse.Namespace, counts_cached: bool
) -> tuple[list[Turn], float]:
    """Both loops, interleaved turn by turn (or concurrently); their turns and the total wall time."""
    loops = new_loops(args.system_tokens)
    turns: list[Turn] = []
    lock = threading.Lock()

    def agent(loop: Loop) -> None:
        for turn in range(1, args.turns + 1):
            done = run_turn(url, model, loop, turn, args, counts_cached)
            with lock:
                turns.append(done)

    started = time.perf_counter()
    if args.concurrent:
        threads = [threading.Thread(target=agent, args=(loop,)) for loop in loops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for turn in range(1, args.turns + 1):
            for loop in loops:
                turns.append(run_turn(url, model, loop, turn, args, counts_cached))
    return sorted(turns, key=lambda t: (t.turn, t.loop)), time.perf_counter() - started


@contextlib.contextmanager
def serving(cmd: list[str], env: dict[str, str] | None, url: str, ready: str, log: Path) -> Iterator[None]:
    """Run a server until the block ends; its output goes to `log`."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, ready)
            yield
        finally:
            stop(proc)


def server_command(
    who: str, args: argparse.Namespace, model_path: Path, template: Path, port: int
) -> tuple[list[str], dict[str, str] | None, str]:
    """The command, environment and readiness path of one server."""
    if who == "candor":
        env = {
            **os.environ,
            "CANDOR_HOST": f"127.0.0.1:{port}",
            "CANDOR_PARALLEL": str(SLOTS),
            "CANDOR_THREADS": str(args.threads),
            "CANDOR_CTX": str(args.ctx),
            "CANDOR_KEEP_ALIVE": "-1",
        }
        return [sys.executable, "-m", "candor", "serve"], env, "/"
    config = who.removeprefix("llama-server:")
    cmd = [
        str(args.tools / "llama-server"),
        "-m",
        str(model_path),
        "-t",
        str(args.threads),
        "-c",
        str(args.ctx * SLOTS),
        "-np",
        str(SLOTS),
        "--no-kv-unified",
        "--jinja",
        "--chat-template-file",
        str(template),
        *LLAMA_CONFIGS[config],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return cmd, None, "/health"


def measure(
    who: str, args: argparse.Namespace, model: str, model_path: Path, template: Path
) -> dict[str, Any]:
    """Start one server fresh, warm it, run both loops, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd, env, ready = server_command(who, args, model_path, template, port)
    log = args.logs / f"{who.replace(':', '-')}.log"
    with serving(cmd, env, url, ready, log):
        # candor loads the model on first use, llama-server at start: one short request warms both
        warm = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
        httpx.post(url + "/v1/messages", json=warm, timeout=600).raise_for_status()
        turns, total = run_loops(url, model, args, counts_cached=who != "candor")
    return {"turns": [asdict(t) for t in turns], "total": total}


def print_run(who: str, result: dict[str, Any]) -> None:
    """One server's turns in one run, on stderr."""
    print(f"  {who}: total {result['total']:.2f} s", file=sys.stderr)
    for t in result["turns"]:
        print(
            f"    {t['loop']}{t['turn']}: ttft {t['ttft']:7.3f} s  total {t['total']:7.3f} s  "
            f"prompt {t['prompt']:6d}  cached {t['cached']:6d}  out {t['output']:4d}  "
            f"{t['stop']} ({t['calls']} calls)",
            file=sys.stderr,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=5, help="turns per loop (5)")
    parser.add_argument("--system-tokens", type=int, default=20000, help="about this many, per loop")
    parser.add_argument("--ctx", type=int, default=24576, help="context per slot, both servers")
    parser.add_argument("--tool-max-tokens", type=int, default=48, help="max_tokens of a tool turn (48)")
    parser.add_argument(
        "--long-max-tokens", type=int, default=600, help=f"max_tokens of turn {LONG_TURN}, the long one (600)"
    )
    parser.add_argument("--llama-tools", help="folder with llama-server")
    parser.add_argument(
        "--llama-configs",
        default=",".join(LLAMA_CONFIGS),
        help=f"llama-server configurations to run, comma-separated: {', '.join(LLAMA_CONFIGS)}",
    )
    parser.add_argument("--concurrent", action="store_true", help="run the two loops at the same time")
    parser.add_argument("--logs", help="folder for the servers' logs (default: a temporary one)")
    args = parser.parse_args()
    configs = [c for c in args.llama_configs.split(",") if c]
    if args.runs < 1 or args.turns < 1 or not configs or any(c not in LLAMA_CONFIGS for c in configs):
        sys.exit(f"--runs and --turns must be at least 1; --llama-configs from: {', '.join(LLAMA_CONFIGS)}")
    tools = find_llama_tools(args.llama_tools)
    if tools is None or not (tools / "llama-server").is_file():
        sys.exit(
            "llama-server not found: build llama.cpp's tools (docs/performance.md), pass --llama-tools DIR"
        )
    args.tools = tools
    entry = Store().builtin_entry()
    model, model_path = entry.name, Path(entry.path)
    servers = ["candor", *(f"llama-server:{c}" for c in configs)]

    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "gemma-tools.jinja"
        template.write_text(LLAMA_SERVER_TEMPLATE)
        args.logs = Path(args.logs) if args.logs else Path(tmp)
        args.logs.mkdir(parents=True, exist_ok=True)
        rows: dict[str, list[dict[str, Any]]] = {who: [] for who in servers}
        for run in range(args.runs):
            order = servers[run % len(servers) :] + servers[: run % len(servers)]  # each goes first in turn
            print(f"run {run + 1}/{args.runs}, order: {', '.join(order)}", file=sys.stderr)
            for who in order:
                rows[who].append(measure(who, args, model, model_path, template))
                print_run(who, rows[who][-1])

    shape = "concurrently" if args.concurrent else "interleaved turn by turn"
    print(
        f"{model_path.name}, {args.threads} threads, {SLOTS} slots x {args.ctx} tokens, 2 loops x "
        f"{args.turns} turns {shape}, ~{args.system_tokens} system tokens each, {args.runs} runs"
    )
    print(tools_build(tools))
    for config in configs:
        flags = " ".join(LLAMA_CONFIGS[config])
        print(f"llama-server:{config}: {flags} (and -c {args.ctx * SLOTS} -np {SLOTS} --no-kv-unified)")
    # per turn: median over runs of TTFT, and the cache each server reported
    keys = [(t["loop"], t["turn"]) for t in rows["candor"][0]["turns"]]
    print("per turn, median TTFT in s over runs (cached/prompt tokens, output tokens of the last run):")
    for index, (loop, turn) in enumerate(keys):
        cells = []
        for who in servers:
            ttfts = [r["turns"][index]["ttft"] for r in rows[who]]
            last = rows[who][-1]["turns"][index]
            cells.append(
                f"{who} {statistics.median(ttfts):7.3f} ({last['cached']}/{last['prompt']}, {last['output']})"
            )
        print(f"  {loop}{turn}: " + "   ".join(cells))
    for who in servers:
        totals = [r["total"] for r in rows[who]]
        ttft_sums = [sum(t["ttft"] for t in r["turns"]) for r in rows[who]]
        print(f"total time {who}: {spread(totals)} s   sum of TTFTs {spread(ttft_sums)} s")
    summary: dict[str, Any] = {}
    for config in configs:
        theirs = f"llama-server:{config}"
        total_ratio = [c["total"] / ll["total"] for c, ll in zip(rows["candor"], rows[theirs], strict=True)]
        ttft_ratio = [
            sum(t["ttft"] for t in c["turns"]) / sum(t["ttft"] for t in ll["turns"])
            for c, ll in zip(rows["candor"], rows[theirs], strict=True)
        ]
        print(f"ratio total time candor/{theirs}: {spread(total_ratio)}")
        print(f"ratio sum of TTFTs candor/{theirs}: {spread(ttft_ratio)}")
        summary[f"total_ratio_median_{config}"] = statistics.median(total_ratio)
        summary[f"ttft_sum_ratio_median_{config}"] = statistics.median(ttft_ratio)
    print(
        json.dumps(
            {
                "model": model_path.name,
                "threads": args.threads,
                "ctx_per_slot": args.ctx,
                "system_tokens": args.system_tokens,
                "turns": args.turns,
                "concurrent": args.concurrent,
                "runs": args.runs,
                **summary,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
