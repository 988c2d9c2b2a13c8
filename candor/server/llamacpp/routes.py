"""llama-server's /tokenize, /detokenize and /apply-template."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from candor.server.llamacpp import convert
from candor.server.llamacpp.protocol import ApplyTemplateRequest, DetokenizeRequest, TokenizeRequest
from candor.server.state import scheduler_of

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    """Token ids of `content`, with their pieces when asked."""
    sched = scheduler_of(request)
    tokens = await asyncio.to_thread(
        sched.tokenize,
        body.model,
        body.content,
        add_special=body.add_special,
        parse_special=body.parse_special,
    )
    if not body.with_pieces:
        return {"tokens": tokens}
    pieces = await asyncio.to_thread(sched.pieces, body.model, tokens)
    return {"tokens": [convert.piece(t, p) for t, p in zip(tokens, pieces, strict=True)]}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, str]:
    """The text of token ids."""
    return {"content": await asyncio.to_thread(scheduler_of(request).detokenize, body.model, body.tokens)}


@router.post("/apply-template")
async def apply_template(body: ApplyTemplateRequest, request: Request) -> dict[str, str]:
    """The prompt a conversation becomes through the model's chat template."""
    wanted = convert.template_request(body)
    return {"prompt": await asyncio.to_thread(scheduler_of(request).render, wanted)}
