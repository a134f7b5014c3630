"""The API-key cache (``api.keycache``): expiry, invalidation, and a cache turned off.

Every revocation contract is tested: through the admin API of the same process at once
(``test_admin``), elsewhere within the TTL (``test_auth``), and with the cache off at the
next request (here)."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from api import keycache
from api.keycache import KeyCache
from core.models import ApiKey, now
from tests.api.helpers import GOOD

API_ENV = {"GUARDTUNE_API_KEY_CACHE_S": "0"}  # read by the ``live_api`` fixture and the in-process app


def test_a_revoked_key_stops_working(sdk, new_tenant, db, unchanged):
    t = new_tenant()
    client = sdk(t)
    assert client.models.list().data
    with Session(db) as session, session.begin():
        session.execute(update(ApiKey).where(ApiKey.id == t.key_id).values(revoked_at=now()))
    with unchanged(t), pytest.raises(openai.AuthenticationError) as err:
        client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    assert err.value.code == "invalid_api_key"
    assert "revoked" in err.value.message


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """``api.keycache``'s monotonic clock, set by the test."""
    now_s = [1000.0]
    monkeypatch.setattr(keycache.time, "monotonic", lambda: now_s[0])
    return now_s


def test_an_entry_lives_for_its_ttl(clock):
    cache: KeyCache[str] = KeyCache()
    cache.put("h", "caller", 5.0, generation=cache.generation)
    clock[0] += 4.9
    assert cache.get("h") == "caller"
    clock[0] += 0.1
    assert cache.get("h") is None
    assert cache.get("other") is None


def test_a_zero_ttl_caches_nothing(clock):
    cache: KeyCache[str] = KeyCache()
    cache.put("h", "caller", 0, generation=cache.generation)
    assert cache.get("h") is None


def test_clearing_drops_entries_and_refuses_reads_that_started_before(clock):
    cache: KeyCache[str] = KeyCache()
    cache.put("h", "caller", 5.0, generation=cache.generation)
    started = cache.generation  # a lookup starts, then a revocation commits and clears
    cache.clear()
    assert cache.get("h") is None
    cache.put("h", "stale caller", 5.0, generation=started)
    assert cache.get("h") is None
    cache.put("h", "caller", 5.0, generation=cache.generation)
    assert cache.get("h") == "caller"


def test_a_full_cache_starts_over(clock, monkeypatch):
    monkeypatch.setattr(keycache, "MAX_ENTRIES", 2)
    cache: KeyCache[str] = KeyCache()
    for name in ("a", "b", "c"):
        cache.put(name, name, 5.0, generation=cache.generation)
    assert [cache.get(name) for name in ("a", "b", "c")] == [None, None, "c"]
