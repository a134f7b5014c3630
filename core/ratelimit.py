"""Per-organization request rate limit: at most N requests per window, the window starting
with the organization's first request in it (so no burst straddles a boundary).

Counts live in Redis when the broker is Redis (shared by every API replica), otherwise in
this process (the embedded default has one API process). :meth:`RateLimiter.hit` raises
:class:`~core.errors.RateLimited` with ``Retry-After`` (seconds until the window ends)."""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache

from core.errors import RateLimited
from core.settings import get_settings


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, redis_url: str | None = None):
        self.limit, self.window_s = limit, window_s
        self._redis = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._lock = threading.Lock()
        self._local: dict[str, tuple[float, int]] = {}  # key -> (window end, count)

    def _count(self, key: str) -> tuple[int, float]:
        """This request's number in the key's window and the seconds the window has left."""
        if self._redis is not None:
            name = f"guardtune:ratelimit:{key}"
            pipe = self._redis.pipeline()
            pipe.set(name, 0, nx=True, px=int(self.window_s * 1000))
            pipe.incr(name)
            pipe.pttl(name)
            _, count, ttl_ms = pipe.execute()
            return int(count), max(ttl_ms, 0) / 1000
        with self._lock:
            now = time.monotonic()
            end, count = self._local.get(key, (0.0, 0))
            if end <= now:
                end, count = now + self.window_s, 0
            self._local[key] = (end, count + 1)
            return count + 1, end - now

    def hit(self, key: str, what: str = "requests") -> None:
        if self.limit <= 0:
            return
        count, left_s = self._count(key)
        if count > self.limit:
            retry = max(1, math.ceil(left_s))
            raise RateLimited(
                f"Rate limit reached: {self.limit} {what} per {self.window_s:.0f}s for your organization. "
                f"Retry after {retry}s.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )


@lru_cache
def chat_limiter() -> RateLimiter:
    """The limiter of ``/v1/chat/completions`` (``GUARDTUNE_CHAT_REQUESTS_PER_MINUTE``)."""
    settings = get_settings()
    redis_url = settings.broker if settings.broker.startswith(("redis://", "rediss://")) else None
    return RateLimiter(settings.chat_requests_per_minute, 60.0, redis_url)
