"""The scheduler: the face requests see. It admits them to a model of the pool and starts them in its
runner; a chat request's prompt is rendered here, once, and its reply read by the pipeline's reader.

Requests to one model share its runner's decode steps (continuous batching); the pool (pool.py) decides
which models are loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from candor.config import Settings
from candor.errors import Busy, InvalidParameter
from candor.identity import POOLING_RANK, not_a_reranker, reranker_embeds_nothing
from candor.pipeline import Infill, Reply, ReplyPlan, ReplyReader, ReplyRequest, plan_reply
from candor.prompt import render_chat, renders_tools, with_default_system, with_tool_instructions
from candor.prompt.replies.thinking import OPEN_TAG
from candor.scheduler.handle import RequestHandle
from candor.scheduler.metrics import Metrics
from candor.scheduler.pool import LoadedModel, ModelPool, SchedulerConfig, defaults_of
from candor.scheduler.protocol import Detokenize, Embed, Embedded, Generate, Rerank, Reranked, Tokenize
from candor.store import StoreEntry
from candor.types import Embeddings, Message, Ranking, SamplingParams, ThinkingBudget

__all__ = ["LoadedModel", "Scheduler", "SchedulerConfig"]


class Scheduler:
    """Thread-safe. Create one per process (the server keeps it on app.state); close() when done."""

    def __init__(
        self,
        settings: Settings | None = None,
        config: SchedulerConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.config = config or SchedulerConfig()
        self.metrics = Metrics()
        self.pool = ModelPool(self.settings, self.config, self.metrics, clock=clock)

    # -- models (the pool's) ---------------------------------------------------------------------------

    def load(
        self, model: str | None, *, ctx: int | None = None, keep_alive: float | None = None
    ) -> LoadedModel:
        """Make sure a model is loaded (with at least `ctx` tokens per request) and return it."""
        return self.pool.load(model, ctx=ctx, keep_alive=keep_alive)

    def is_ready(self, model: str | None, *, ctx: int | None = None) -> bool:
        """Whether load() would return at once."""
        return self.pool.is_ready(model, ctx=ctx)

    def unload(self, model: str | None) -> bool:
        """Unload a model now when idle, else when its requests end; False when not loaded."""
        return self.pool.unload(model)

    def unload_name(self, name: str) -> bool:
        """Forget a removed name; unload its file once no other name of it is in use."""
        return self.pool.unload_name(name)

    def loaded(self) -> list[dict[str, Any]]:
        """The loaded models, most recently used first."""
        return self.pool.loaded()

    def defaults(self, model: str | None, *, chat: bool = False) -> SamplingParams:
        """The sampling defaults a name carries, and with `chat` its chat format's. Loads nothing."""
        return self.pool.defaults(model, chat=chat)

    def close(self) -> None:
        """Unload everything."""
        self.pool.close()

    # -- requests ------------------------------------------------------------------------------------

    def _admit(self, loaded: LoadedModel) -> None:
        if loaded.runner.active >= loaded.runner.ready.parallel + self.config.queue_max:
            self.metrics.add(rejected_busy=1)
            raise Busy(
                f"{loaded.name} has {loaded.runner.active} requests in flight, all it queues; retry later"
            )
        loaded.expires_at = None
        loaded.last_used = time.monotonic()
        self.metrics.add(requests=1)

    def reply(self, request: ReplyRequest, *, load_seconds: float = 0.0) -> Reply:
        """Start a reply: render a conversation through the model's chat template (or its disclosed
        fallback) or take a raw prompt; apply the request's sampling over the model's defaults; return the
        reply, whose events carry text, reasoning and tool calls apart.

        `load_seconds`: time the caller already spent loading the model for this request; the final
        event's timings report it with any wait here."""
        pool = self.pool
        with pool.claim(request.model, ctx=request.ctx, keep_alive=request.keep_alive) as (loaded, waited):
            entry = pool.entry_for(request.model, loaded)
            fmt = None if request.raw else loaded.chat_format
            sampling = request.sampled(request.params or defaults_of(entry, fmt))
            schema = request.response_format.schema if request.response_format else None
            if request.prompt is not None:
                reader = ReplyReader.plain()
                message = _raw(request.prompt, request.infill)
            else:
                plan, text = _rendered(loaded, entry, request)
                if plan.forced_schema is not None:
                    if schema is not None or sampling.grammar is not None:
                        raise InvalidParameter(
                            "a required tool call and a response format cannot be combined"
                        )
                    schema = plan.forced_schema
                # DeepSeek-R1 distills' templates open <think> for the model: the reply starts inside it.
                opens = plan.thinking and text.rstrip().endswith(OPEN_TAG)
                reader = ReplyReader(plan, loaded.card.chat_template, started=opens)
                # A grammar decides every token itself: the close tag cannot be written in its place.
                budget = None
                free = schema is None and sampling.grammar is None
                if plan.thinking and request.thinking_budget is not None and free:
                    budget = ThinkingBudget(request.thinking_budget, opened=opens)
                message = _templated(text, loaded.chat_format.stop, budget)
            if schema is not None:
                sampling = replace(sampling, json_schema=schema, grammar=None)
            self._admit(loaded)
            handle = loaded.runner.generate(lambda i: message(i, sampling))
            handle.load_seconds = load_seconds + waited
        fallback = loaded.chat_format.name if not request.raw and loaded.chat_format.is_fallback else None
        return Reply(handle, reader, fallback)

    def count_tokens(self, request: ReplyRequest) -> int:
        """The prompt tokens reply() would give the model for this conversation (its usage's count)."""
        with self.pool.claim(request.model, ctx=request.ctx, keep_alive=request.keep_alive) as (loaded, _):
            entry = self.pool.entry_for(request.model, loaded)
            _, text = _rendered(loaded, entry, request)
            tokens: list[int] = loaded.runner.call(lambda i: Tokenize(i, text, as_prompt=True))
            self.pool.schedule_expiry(loaded)
        return len(tokens)

    def generate(
        self,
        model: str | None,
        prompt: str | Sequence[int],
        *,
        params: SamplingParams | None = None,
        keep_alive: float | None = None,
        ctx: int | None = None,
        load_seconds: float = 0.0,
    ) -> RequestHandle:
        """Continue raw text or token ids with `params` (default: the model's); iterate for chunks.
        `load_seconds` as for reply()."""
        request = ReplyRequest(model, prompt=prompt, params=params, ctx=ctx, keep_alive=keep_alive)
        return self.reply(request, load_seconds=load_seconds).handle

    def chat(
        self,
        model: str | None,
        messages: Sequence[Message | Mapping[str, Any]],
        *,
        params: SamplingParams | None = None,
        keep_alive: float | None = None,
        ctx: int | None = None,
        load_seconds: float = 0.0,
    ) -> RequestHandle:
        """Answer a conversation through the model's chat template; iterate for chunks of raw text.
        `load_seconds` as for reply()."""
        turns = tuple(Message.coerce(m) for m in messages)
        request = ReplyRequest(model, turns, params=params, ctx=ctx, keep_alive=keep_alive)
        return self.reply(request, load_seconds=load_seconds).handle

    def embed(
        self, model: str | None, texts: Sequence[str], *, keep_alive: float | None = None
    ) -> Embeddings:
        """One L2-normalised vector per text, with the tokens read and the time taken."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidParameter("embed takes a list of strings")
        started = time.perf_counter()
        with self.pool.claim(model, keep_alive=keep_alive) as (loaded, waited):
            if loaded.card.pooling_type == POOLING_RANK:
                raise reranker_embeds_nothing(loaded.name)
            embedded: Embedded = loaded.runner.call(lambda i: Embed(i, tuple(texts)))
            loaded.last_used = time.monotonic()
            self.pool.schedule_expiry(loaded)  # before the claim ends: an old expiry must not close it now
        seconds = time.perf_counter() - started
        return Embeddings(embedded.vectors, embedded.tokens, load_seconds=waited, total_seconds=seconds)

    def rerank(
        self, model: str | None, query: str, documents: Sequence[str], *, keep_alive: float | None = None
    ) -> Ranking:
        """A reranker's score for each document against the query, in the documents' order."""
        if not isinstance(query, str):
            raise InvalidParameter("rerank takes the query as a string")
        if isinstance(documents, str) or not documents or not all(isinstance(d, str) for d in documents):
            raise InvalidParameter("rerank takes the documents as a non-empty list of strings")
        with self.pool.claim(model, keep_alive=keep_alive) as (loaded, _):
            if not loaded.card.is_reranker:
                raise not_a_reranker(loaded.name, loaded.card.pooling_type)
            reranked: Reranked = loaded.runner.call(lambda i: Rerank(i, query, tuple(documents)))
            loaded.last_used = time.monotonic()
            self.pool.schedule_expiry(loaded)  # before the claim ends: an old expiry must not close it now
        return Ranking(reranked.scores, reranked.tokens)

    def tokenize(
        self, model: str | None, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        """Tokenize with the model's vocabulary."""
        loaded = self.load(model)
        tokens: list[int] = loaded.runner.call(lambda i: Tokenize(i, text, add_special, parse_special))
        return tokens

    def detokenize(self, model: str | None, tokens: Sequence[int]) -> str:
        """Token ids -> text, as the model's detokenizer renders them."""
        text: str = self.load(model).runner.call(lambda i: Detokenize(i, tuple(tokens)))
        return text

    def pieces(self, model: str | None, tokens: Sequence[int]) -> list[bytes]:
        """The bytes each token stands for (a token may hold part of a UTF-8 character)."""
        found: list[bytes] = self.load(model).runner.call(lambda i: Detokenize(i, tuple(tokens), pieces=True))
        return found

    def render(self, request: ReplyRequest) -> str:
        """The prompt a conversation becomes through the model's chat template (what reply() sends)."""
        with self.pool.claim(request.model, ctx=request.ctx, keep_alive=request.keep_alive) as (loaded, _):
            _, text = _rendered(loaded, self.pool.entry_for(request.model, loaded), request)
            self.pool.schedule_expiry(loaded)
        return text


def _rendered(loaded: LoadedModel, entry: StoreEntry | None, request: ReplyRequest) -> tuple[ReplyPlan, str]:
    """The conversation's plan (tools, thinking) and its prompt, rendered through the model's chat format."""
    plan = plan_reply(
        loaded.name, loaded.card.chat_template, request.tools, request.tool_choice, request.think
    )
    turns = with_default_system(request.messages, entry.system if entry else None)
    if plan.tools and not renders_tools(loaded.chat_format):
        turns = with_tool_instructions(turns, plan.tools)
    text = render_chat(
        loaded.chat_format,
        turns,
        bos_token=loaded.runner.ready.bos_text,
        eos_token=loaded.runner.ready.eos_text,
        tools=plan.tools,
        variables=plan.variables,
    )
    return plan, text


def _templated(
    text: str, stop: tuple[str, ...], budget: ThinkingBudget | None
) -> Callable[[int, SamplingParams], Generate]:
    # chat-template output carries control tokens as text; the format's turn markers end the reply
    return lambda i, sampling: Generate(
        i, sampling, text=text, parse_special=True, extra_stop=stop, thinking_budget=budget
    )


def _raw(
    prompt: str | Sequence[int], infill: Infill | None = None
) -> Callable[[int, SamplingParams], Generate]:
    if isinstance(prompt, str):
        text = prompt
        return lambda i, sampling: Generate(i, sampling, text=text, infill=infill)
    if infill is not None:
        raise InvalidParameter("an infill prompt is text, not token ids")
    tokens = tuple(int(t) for t in prompt)
    return lambda i, sampling: Generate(i, sampling, tokens=tokens)
