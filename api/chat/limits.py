"""The limits of ``/v1/chat/completions``, checked before any model or tokenizer sees a request.

* Size (400 ``prompt_too_large``, ``param: messages``, the message naming the setting): at
  most ``GUARDTUNE_CHAT_MAX_MESSAGES`` messages, ``GUARDTUNE_CHAT_MAX_CHARS`` characters of
  content and ``GUARDTUNE_CHAT_MAX_PROMPT_TOKENS`` estimated prompt tokens
  (:func:`prompt_tokens`), so no backend templates or tokenizes an unbounded conversation.
* Rate (429 ``rate_limit_exceeded`` with ``Retry-After``): per organization and minute,
  ``GUARDTUNE_CHAT_REQUESTS_PER_MINUTE`` requests and ``GUARDTUNE_CHAT_TOKENS_PER_MINUTE``
  tokens, a request costing its estimated prompt tokens plus its ``max_tokens``
  (:mod:`core.ratelimit`). Answers, 429s included, carry OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math

from core.chat import ChatCompletionRequest
from core.datasets import CHARS_PER_TOKEN
from core.errors import InvalidRequest, RateLimited
from core.ratelimit import carrying, give_back, headers, take
from core.settings import Settings

TOKENS_PER_MESSAGE = 4  # role and separators of the chat template, as OpenAI's estimate counts them


def prompt_tokens(request: ChatCompletionRequest) -> int:
    """The request's prompt tokens, estimated before a tokenizer is at hand: its characters
    of content over ``CHARS_PER_TOKEN``, plus :data:`TOKENS_PER_MESSAGE` per message."""
    return math.ceil(chars_of(request) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages)


def chars_of(request: ChatCompletionRequest) -> int:
    return sum(len(m.plain()["content"]) for m in request.messages)


def _too_large(what: str, limit: int, setting: str) -> InvalidRequest:
    return InvalidRequest(
        f"The conversation is too large: {what}, over this server's limit of {limit} ({setting}).",
        code="prompt_too_large",
        param="messages",
    )


def check_size(request: ChatCompletionRequest, settings: Settings) -> int:
    """400 when the request is over a size limit; else its estimated prompt tokens."""
    if len(request.messages) > settings.chat_max_messages:
        raise _too_large(f"{len(request.messages)} messages", settings.chat_max_messages, "GUARDTUNE_CHAT_MAX_MESSAGES")
    chars = chars_of(request)
    if chars > settings.chat_max_chars:
        raise _too_large(f"{chars} characters", settings.chat_max_chars, "GUARDTUNE_CHAT_MAX_CHARS")
    tokens = prompt_tokens(request)
    if tokens > settings.chat_max_prompt_tokens:
        raise _too_large(
            f"about {tokens} prompt tokens", settings.chat_max_prompt_tokens, "GUARDTUNE_CHAT_MAX_PROMPT_TOKENS"
        )
    return tokens


def admit(org_id: str, cost_tokens: int) -> dict[str, str]:
    """Count one request and ``cost_tokens`` against the organization's budgets; returns
    the ``x-ratelimit-*`` headers of its answer, or raises the 429 carrying them."""
    try:
        requests = take("chat_requests", org_id)
    except RateLimited as exc:
        raise carrying(exc, "requests") from None
    try:
        tokens = take("chat_tokens", org_id, cost_tokens)
    except RateLimited as exc:
        give_back("chat_requests", org_id)  # the request is not served: it does not count
        raise carrying(exc, "tokens", headers("requests", requests)) from None
    return {**headers("requests", requests), **headers("tokens", tokens)}
