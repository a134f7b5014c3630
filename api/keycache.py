"""A short-lived, in-process cache of authenticated API keys: key hash → caller.

Contracts:

* Only keys found valid (present, not revoked) are cached; an unknown or revoked key is
  looked up in the database on every request.
* An entry lives ``GUARDTUNE_API_KEY_CACHE_S`` seconds from the database read that made it
  (``0``: no cache, every request reads the key).
* A revocation through this process (the admin API) calls :func:`forget_all` after its commit:
  the key stops working here at once. A read that started before the revocation cannot put
  its stale answer back (the cache's generation changed). A revocation anywhere else (another
  API process, ``guardtune-ops keys revoke``, a direct database write) takes effect in this
  process within the TTL.
* At most :data:`MAX_ENTRIES` keys; when full, the cache starts over (a miss is only a query).

The cache is a plain dict used from the event loop and worker threads: each operation is a
single dict operation (atomic under the GIL)."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 10_000


class KeyCache(Generic[T]):
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, T]] = {}
        self.generation = 0

    def get(self, key_hash: str) -> T | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            self._entries.pop(key_hash, None)
            return None
        return value

    def put(self, key_hash: str, value: T, ttl_s: float, *, generation: int) -> None:
        """Keep ``value`` for ``ttl_s`` seconds, unless the cache was cleared since
        ``generation`` (read before the database lookup that produced ``value``)."""
        if ttl_s <= 0 or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + ttl_s, value)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


KEYS: KeyCache = KeyCache()


def forget_all() -> None:
    """Drop every cached key (after a revocation is committed)."""
    KEYS.clear()
