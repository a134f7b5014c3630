"""Per-organization budgets per window: at most N requests (or N tokens) per window, the
window starting with the organization's first use in it (so no burst straddles a boundary).

One :class:`RateLimiter` per budget (:func:`limiter` builds each from its setting): chat
requests and chat tokens (``/v1/chat/completions``), file uploads and job creations.
Counts live in Redis when the broker is Redis (shared by every API replica), otherwise in
this process (the embedded default has one API process); while Redis cannot be reached
nothing is limited (a warning is logged per request). :meth:`RateLimiter.take` counts
an amount and returns the :class:`Usage` left, or raises :class:`~core.errors.RateLimited`
with ``Retry-After`` (seconds until the window ends) and takes nothing; :func:`headers` are
OpenAI's ``x-ratelimit-*`` headers of a budget, which every 429 carries."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from core.errors import RateLimited
from core.logging import get_logger
from core.settings import get_settings

log = get_logger(__name__)

Budget = Literal["chat_requests", "chat_tokens", "uploads", "job_creations"]
# What each budget counts, for messages, and its setting (per minute, per organization).
WHAT = {
    "chat_requests": ("chat completion requests", "chat_requests_per_minute"),
    "chat_tokens": ("chat tokens", "chat_tokens_per_minute"),
    "uploads": ("file uploads", "uploads_per_minute"),
    "job_creations": ("fine-tuning job creations", "job_creations_per_minute"),
}


@dataclass(frozen=True)
class Usage:
    """A budget after a take: its limit, what is left of it and seconds until it refills."""

    limit: int
    remaining: int
    reset_s: float


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, redis_url: str | None = None, name: str = "requests"):
        self.limit, self.window_s, self.name = limit, window_s, name
        self._redis = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._lock = threading.Lock()
        self._local: dict[str, tuple[float, int]] = {}  # key -> (window end, count)

    def _add(self, key: str, amount: int) -> tuple[int, float] | None:
        """Add ``amount`` (negative: give back) to the key's window: its count and seconds
        left, or None when Redis cannot be reached (the limit is not enforced meanwhile: a
        broker outage must not take uploads and chat down with it)."""
        if self._redis is not None:
            import redis

            name = f"guardtune:ratelimit:{self.name}:{key}"
            pipe = self._redis.pipeline()
            pipe.set(name, 0, nx=True, px=int(self.window_s * 1000))
            pipe.incrby(name, amount)
            pipe.pttl(name)
            try:
                _, count, ttl_ms = pipe.execute()
            except redis.RedisError as exc:
                log.warning("rate_limit_store_unavailable", budget=self.name, error=type(exc).__name__)
                return None
            return int(count), max(ttl_ms, 0) / 1000
        with self._lock:
            now = time.monotonic()
            end, count = self._local.get(key, (0.0, 0))
            if end <= now:
                end, count = now + self.window_s, 0
            self._local[key] = (end, count + amount)
            return count + amount, end - now

    def give_back(self, key: str, amount: int = 1) -> None:
        """Uncount ``amount`` taken in the key's current window (what was refused or not served)."""
        if self.limit > 0:
            self._add(key, -amount)

    def take(self, key: str, amount: int = 1, what: str = "requests") -> Usage:
        """Count ``amount`` against the key's budget; over it, 429 and nothing is counted."""
        if self.limit <= 0:
            return Usage(0, 0, 0.0)
        counted = self._add(key, amount)
        if counted is None:
            return Usage(self.limit, self.limit, self.window_s)
        count, left_s = counted
        if count <= self.limit:
            return Usage(self.limit, self.limit - count, left_s)
        self.give_back(key, amount)
        retry = max(1, math.ceil(left_s))
        usage = Usage(self.limit, max(0, self.limit - count + amount), left_s)
        too_big = amount > self.limit
        raise RateLimited(
            f"Rate limit reached: {self.limit} {what} per {self.window_s:.0f}s for your organization"
            + (f"; this request alone needs {amount}." if too_big else f". Retry after {retry}s."),
            code="rate_limit_exceeded",
            headers={"x-should-retry": "false"} if too_big else {"Retry-After": str(retry)},
            usage=usage,
        )


@lru_cache
def limiter(budget: Budget) -> RateLimiter:
    """The limiter of one budget, from its ``GUARDTUNE_…_PER_MINUTE`` setting (0: unlimited)."""
    settings = get_settings()
    redis_url = settings.broker if settings.broker.startswith(("redis://", "rediss://")) else None
    return RateLimiter(getattr(settings, WHAT[budget][1]), 60.0, redis_url, name=budget)


def take(budget: Budget, org_id: str, amount: int = 1) -> Usage:
    """Count ``amount`` against the organization's ``budget`` (429 when over it)."""
    return limiter(budget).take(org_id, amount, WHAT[budget][0])


def take_request(budget: Budget, org_id: str) -> Usage:
    """Count one request against the organization's ``budget``; its 429 carries the budget's
    ``x-ratelimit-*-requests`` headers beside ``Retry-After`` (uploads, job creations)."""
    try:
        return take(budget, org_id)
    except RateLimited as exc:
        raise carrying(exc, "requests") from None


def _reset(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``6s``, ``1m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def headers(kind: str, usage: Usage) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-{kind}`` headers of one budget (none
    when it is unlimited)."""
    if usage.limit <= 0:
        return {}
    return {
        f"x-ratelimit-limit-{kind}": str(usage.limit),
        f"x-ratelimit-remaining-{kind}": str(usage.remaining),
        f"x-ratelimit-reset-{kind}": _reset(usage.reset_s),
    }


def carrying(exc: RateLimited, kind: str, also: dict[str, str] | None = None) -> RateLimited:
    """``exc`` with the headers of the budget it exceeded (and ``also``)."""
    budget = headers(kind, exc.usage) if exc.usage is not None else {}
    exc.headers = {**(exc.headers or {}), **(also or {}), **budget}
    return exc


def give_back(budget: Budget, org_id: str, amount: int = 1) -> None:
    """Uncount ``amount`` the organization took from ``budget`` in its current window."""
    limiter(budget).give_back(org_id, amount)
