"""Typed dependencies: settings, a database session per request, the caller's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.keycache import KEYS
from core.db import new_session
from core.errors import AuthenticationError, PermissionDenied
from core.models import ApiKey, now
from core.orgs.apikeys import hash_key
from core.settings import Settings, get_settings
from core.storage import ObjectStore, get_store
from core.vocab import KeyScope


async def _settings() -> Settings:
    """The cached settings, without a trip to the thread pool (a sync dependency takes one)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


# Closing a session that still holds a connection returns it to the pool (a rollback: I/O),
# so that runs on a thread, drawn from a limiter of its own: never waiting behind requests
# that wait for a connection this session holds.
_CLOSERS = anyio.CapacityLimiter(64)


async def get_db() -> AsyncIterator[Session]:
    """A session per request. Opening one does no I/O (it connects on first use), so it is
    made on the event loop, not on a thread of the endpoint pool."""
    session = new_session()
    try:
        yield session
    finally:
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.close, limiter=_CLOSERS)
        else:
            session.close()  # holds no connection: nothing to wait for


SessionDep = Annotated[Session, Depends(get_db)]

# Each domain's service is a typed dependency too (``JobServiceDep`` in ``api/jobs/deps.py``,
# and likewise for files, models and admin). Those are ``async``: building a service does no
# I/O, so it takes no thread of the endpoint pool; it wraps this request's session (FastAPI
# resolves ``get_db`` once per request).


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (the audit actor), its organization and scope."""

    key_id: str
    org_id: str
    scope: KeyScope

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    return token.strip()


def _lookup(session: Session, key_hash: str) -> Caller:
    """The caller of a key hash from the database (401 if unknown or revoked), its
    ``last_used_at`` refreshed when older than a minute. Returns holding no connection."""
    try:
        key = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
        if key is None or key.revoked_at is not None:
            raise AuthenticationError("Incorrect or revoked API key provided.", code="invalid_api_key")
        caller = Caller(key.id, key.org_id, KeyScope(key.scope))
        if key.last_used_at is None or now() - key.last_used_at > 60:
            key.last_used_at = now()
            session.commit()
    finally:
        # End the transaction: its pooled connection goes back now, not after the endpoint,
        # which may first wait for a thread (holding both would deadlock under load).
        session.rollback()
    return caller


async def identify(request: Request, settings: Settings) -> Caller:
    """The caller of the request's bearer key (401 otherwise), on a session of its own that
    holds no connection when this returns. :class:`api.routing.GuardedRoute` calls it
    before the request's body is read, for every route that depends on :func:`authenticate`.

    A key found valid is cached for ``GUARDTUNE_API_KEY_CACHE_S`` (:mod:`api.keycache`:
    revocation contracts there), so a request whose key is cached takes no thread and no
    query; a miss reads the key on a thread of the endpoint pool (and releases its
    connection there). ``last_used_at`` is refreshed on misses, at most once a minute."""
    key_hash = hash_key(_bearer(request), settings.secret_key)
    caller: Caller | None = KEYS.get(key_hash)
    if caller is None:
        generation = KEYS.generation
        session = new_session()
        try:
            caller = await anyio.to_thread.run_sync(_lookup, session, key_hash)
        finally:
            session.close()  # _lookup ended its transaction: no connection, no I/O
        KEYS.put(key_hash, caller, settings.api_key_cache_s, generation=generation)
    return caller


async def authenticate(request: Request) -> Caller:
    """The caller :class:`api.routing.GuardedRoute` identified before the body was read."""
    caller: Caller = request.state.caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


def require_admin(caller: CallerDep) -> Caller:
    if caller.scope != KeyScope.ADMIN:
        raise PermissionDenied("This endpoint needs an admin-scoped API key.", code="insufficient_scope")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
