"""``POST /v1/chat/completions`` for base models and the organization's released models."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import CUSTOMER
from api.chat import service
from api.deps import CallerDep, SessionDep, SettingsDep
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS, ErrorResponse
from core import chat_params
from core.chat import ChatCompletionRequest
from core.inference import get_backend

router = APIRouter(route_class=GuardedRoute, tags=["chat"], dependencies=CUSTOMER, responses=COMMON_ERRORS)


@router.post(
    "/chat/completions",
    summary="Create a chat completion",
    response_model=None,
    responses={
        200: {
            "description": "A `chat.completion`, or with `stream` server-sent `chat.completion.chunk` events "
            "ending with `data: [DONE]`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        429: {
            "model": ErrorResponse,
            "description": "Request or token budget of the organization exceeded (see Retry-After and the "
            "x-ratelimit-* headers)",
        },
        503: {"model": ErrorResponse, "description": "The inference backend is unavailable"},
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> Any:
    """OpenAI's chat completion for a registry base model or a released `ft:` model of your
    organization (greedy decoding with `temperature: 0`). Other organizations' models,
    blocked and revoked models answer 404. Every OpenAI parameter is recognized (others are
    400 `unknown_parameter`); one the server's inference backend cannot honour is 400
    `unsupported_parameter` naming it (see the README's chat section)."""
    target, rate_headers = await run_in_threadpool(service.authorize, session, caller, body, settings)
    await run_in_threadpool(session.close)  # no connection held while generating
    max_tokens = body.requested_max_tokens() or settings.chat_max_tokens
    forwarded = body.forward_body(target.model, max_tokens, chat_params.forwarded(settings.inference_backend))
    client, response = await service.forward(get_backend(settings), target, forwarded, settings.inference_timeout_s)
    if body.stream:
        return StreamingResponse(
            service.relay(client, response),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **rate_headers},
        )
    try:
        payload = json.loads(await response.aread())
    finally:
        await response.aclose()
        await client.aclose()
    payload["model"] = target.model
    return JSONResponse(payload, headers=rate_headers)
