"""The per-organization rate limiter in both stores: this process (embedded default) and
Redis (shared by API replicas)."""

from __future__ import annotations

import time

import pytest

from core.errors import RateLimited
from core.ratelimit import RateLimiter


@pytest.mark.parametrize("store", ["local", "redis"])
def test_limit_per_key_with_retry_after_and_a_fresh_window(store, redis_url):
    limiter = RateLimiter(2, window_s=1.0, redis_url=redis_url if store == "redis" else None)
    key = f"org-{store}-{time.monotonic_ns()}"
    limiter.take(key)
    limiter.take(key)
    with pytest.raises(RateLimited) as err:
        limiter.take(key)
    assert err.value.status_code == 429
    assert err.value.headers == {"Retry-After": "1"}
    limiter.take(key + "-other")  # another organization has its own count
    time.sleep(1.1)
    limiter.take(key)  # the window ended


def test_zero_means_unlimited():
    limiter = RateLimiter(0)
    for _ in range(100):
        limiter.take("org")
