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


def test_an_unreachable_redis_limits_nothing():
    """A broker outage must not take the limited routes down: the limit waits for Redis."""
    limiter = RateLimiter(1, redis_url="redis://127.0.0.1:1/0")
    first = limiter.take("org")
    second = limiter.take("org")
    assert first.remaining == 1
    assert second.remaining == 1


@pytest.mark.parametrize("store", ["local", "redis"])
def test_a_refused_take_counts_nothing_and_amounts_add_up(store, redis_url):
    limiter = RateLimiter(10, window_s=60, redis_url=redis_url if store == "redis" else None, name="tokens")
    key = f"org-{store}-{time.monotonic_ns()}"
    assert limiter.take(key, 6).remaining == 4
    with pytest.raises(RateLimited) as err:
        limiter.take(key, 5)
    assert err.value.usage.remaining == 4
    assert limiter.take(key, 4).remaining == 0
