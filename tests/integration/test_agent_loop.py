"""The agent loop as Claude Code runs it: every turn resends the whole conversation, so each turn must reuse
the last one's KV. Two loops at once, each with its own ~20k-token system prompt, through the `anthropic`
SDK against a real `candor serve` on the default model with its default (training-length) context.

Time to first token is the engine's (from prompt to first sampled token, summed in /metrics): candor sends
a tool call once it is whole, so the client sees a tool turn's first event only at its end. The long text
turn is also timed at the client."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import pytest
from live_server import start_server, stop_server

MODEL = "gemma-3-270m:Q4_K_M"
TURNS = 5
LONG_TURN = 2  # this turn's answer is longer than the default model's 512-token sliding window
# Letters and spaces with no end (llama-server's grammar extension): the long answer runs to max_tokens.
ENDLESS = "root ::= [a-z ] root"
LONG = 600
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file of the repository",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "run",
        "description": "Run a shell command in the repository",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string", "maxLength": 200}},
            "required": ["command"],
        },
    },
]
WORDS = [
    "agent",
    "buffer",
    "cache",
    "commit",
    "config",
    "context",
    "decode",
    "deploy",
    "engine",
    "error",
    "file",
    "function",
    "handler",
    "index",
    "kernel",
    "layer",
    "library",
    "loader",
    "memory",
    "module",
    "network",
    "option",
    "parser",
    "patch",
    "pointer",
    "process",
    "queue",
    "request",
    "resource",
    "runner",
    "schema",
    "server",
    "session",
    "socket",
    "stream",
    "string",
    "system",
    "template",
    "thread",
    "token",
    "update",
    "value",
    "vector",
    "version",
    "window",
    "worker",
    "always",
    "before",
    "carefully",
    "check",
    "ensure",
    "explain",
    "never",
    "only",
    "prefer",
    "report",
    "return",
    "review",
    "run",
    "test",
    "tool",
    "use",
    "verify",
    "when",
    "with",
    "without",
]


def system_prompt(seed: int, words: int = 13_000) -> str:
    """A long agent system prompt: numbered rules of plain words, distinct per seed."""
    rng = random.Random(seed)
    lines, n = [], 0
    while n < words:
        k = rng.randint(8, 16)
        lines.append(f"{len(lines) + 1}. " + " ".join(rng.choice(WORDS) for _ in range(k)) + ".")
        n += k
    return f"You are coding agent number {seed}.\n" + "\n".join(lines)


@dataclass
class Loop:
    """One agent's conversation, and what each of its turns reported."""

    seed: int
    system: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)  # the engine's, from /metrics
    client_ttft: list[float] = field(default_factory=list)
    usage: list[Any] = field(default_factory=list)

    def turn(self, client: anthropic.Anthropic, url: str, n: int) -> None:
        """Send the conversation; keep the answer as the SDK returned it, then a scripted tool result."""
        if n == 0:
            self.messages.append(
                {"role": "user", "content": "The test suite fails. Find out why and fix it."}
            )
        long = n == LONG_TURN
        request: dict[str, Any] = {
            "model": MODEL,
            "system": self.system,
            "messages": self.messages,
            "tools": TOOLS,
            # The base model has no tool format of its own: forced calls are the grammar's.
            "tool_choice": {"type": "none"} if long else {"type": "any"},
            "max_tokens": LONG if long else 60,
            "extra_body": {"temperature": 0, **({"grammar": ENDLESS} if long else {})},
        }
        engine_before = counters(url)["time_to_first_token_seconds"]
        started = time.perf_counter()
        first = None
        with client.messages.stream(**request) as stream:
            for event in stream:
                if first is None and event.type == "content_block_delta":
                    first = time.perf_counter() - started
            message = stream.get_final_message()
        assert first is not None
        self.client_ttft.append(first)
        self.ttft.append(counters(url)["time_to_first_token_seconds"] - engine_before)
        self.usage.append(message.usage)
        content = [b.model_dump(exclude_none=True, exclude={"parsed_output"}) for b in message.content]
        self.messages.append({"role": "assistant", "content": content})
        if long:
            assert message.stop_reason == "max_tokens" and message.usage.output_tokens == LONG
            self.messages.append({"role": "user", "content": "Good. Now run the tests again."})
            return
        assert message.stop_reason == "tool_use"
        calls = [b for b in message.content if b.type == "tool_use"]
        results = [
            {
                "type": "tool_result",
                "tool_use_id": call.id,
                "content": f"exit status 1\n{json.dumps(call.input)}: test_{self.seed}_{n} failed",
            }
            for call in calls
        ]
        self.messages.append({"role": "user", "content": results})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("agent-home"), env={"CANDOR_PARALLEL": "2"})
    yield url
    stop_server(proc)


def counters(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r"^candor_(\w+?)(?:_total)? (\S+)$", text, re.M)}


def test_two_interleaved_agent_loops_reuse_their_own_prefix_every_turn(server: str) -> None:
    client = anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0, timeout=600)
    loops = [Loop(seed, system_prompt(seed)) for seed in (1, 2)]
    before = counters(server)
    for n in range(TURNS):
        for loop in loops:
            loop.turn(client, server, n)
    after = counters(server)

    ps = httpx.get(f"{server}/api/ps").json()["models"][0]
    assert ps["context_length"] == 32768  # the default model's training context, in each of 2 slots
    fresh = 0
    for loop in loops:
        inputs = [u.input_tokens for u in loop.usage]
        cached = [u.cache_read_input_tokens for u in loop.usage]
        print(
            f"loop {loop.seed}: input {inputs}, cached {cached}, engine ttft "
            f"{[round(t, 2) for t in loop.ttft]}, client ttft {[round(t, 2) for t in loop.client_ttft]}"
        )
        assert inputs[0] > 18_000 and cached[0] == 0
        for n in range(1, TURNS):
            # Everything the last turn read is reused (after the long answer too, though it passed the
            # sliding window); only the answer and the new turn are read.
            assert cached[n] >= inputs[n - 1], (n, cached, inputs)
            assert loop.ttft[n] <= 0.1 * loop.ttft[0], (n, loop.ttft)
        assert loop.client_ttft[LONG_TURN] <= 0.1 * loop.client_ttft[0], loop.client_ttft
        fresh += inputs[0] + sum(inputs[n] - cached[n] for n in range(1, TURNS))
    # The server read each prompt token once: no prefix was read again.
    read = (after["prompt_tokens"] - before["prompt_tokens"]) - (
        after["prompt_tokens_cached"] - before["prompt_tokens_cached"]
    )
    assert read == fresh
