"""Deleting stored objects so that they really go.

A deletion runs after the commit that made the objects unreachable (a file's row marked
deleted, a model revoked, an organization purged), so a rolled-back change never loses
data. It is tried :data:`ATTEMPTS` times with backoff; if the store still fails, a
:class:`~core.models.PendingDeletion` row is committed and :func:`sweep` (the worker's
periodic task, and ``guardtune-ops storage sweep``) retries it until it succeeds
(``guardtune-ops storage pending`` lists what is left).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.logging import get_logger
from core.models import PendingDeletion
from core.storage import ObjectStore, get_store

log = get_logger(__name__)

ATTEMPTS = 3
BACKOFF_S = 0.2  # doubled after each failed attempt
SWEEP_BATCH = 100


def _delete(store: ObjectStore, key: str, prefix: bool) -> None:
    if prefix:
        store.delete_prefix(key)
    else:
        store.delete(key)


def delete_with_retries(store: ObjectStore, key: str, *, prefix: bool = False) -> None:
    """Delete the object ``key`` (every object under it with ``prefix``), :data:`ATTEMPTS`
    tries with backoff; the last failure is raised."""
    for attempt in range(ATTEMPTS):
        try:
            _delete(store, key, prefix)
            return
        except Exception:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(BACKOFF_S * 2**attempt)


def delete_or_defer(
    session: Session, key: str, *, prefix: bool = False, reason: str, store: ObjectStore | None = None
) -> bool:
    """Delete now (:func:`delete_with_retries`); if the store keeps failing, commit a
    :class:`PendingDeletion` for the sweep. Call it outside any transaction of the caller's
    (it commits ``session``). True when the objects are gone now."""
    try:
        delete_with_retries(store or get_store(), key, prefix=prefix)
        return True
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        log.warning("object_delete_deferred", key=key, prefix=prefix, reason=reason, error=error)
        session.add(PendingDeletion(key=key, prefix=prefix, reason=reason[:300], last_error=error))
        session.commit()
        return False


@dataclass(frozen=True)
class SweepResult:
    deleted: int
    failed: int


def sweep(session: Session, store: ObjectStore | None = None, limit: int = SWEEP_BATCH) -> SweepResult:
    """Retry the oldest ``limit`` pending deletions once each (committed): a success removes
    the row, a failure counts the attempt and keeps its error."""
    store = store or get_store()
    rows = list(session.scalars(select(PendingDeletion).order_by(PendingDeletion.id).limit(limit)))
    deleted = 0
    for row in rows:
        try:
            _delete(store, row.key, row.prefix)
        except Exception as exc:
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
            continue
        session.delete(row)
        deleted += 1
    session.commit()
    if rows:
        log.info("deletion_sweep", deleted=deleted, failed=len(rows) - deleted)
    return SweepResult(deleted, len(rows) - deleted)
