"""The tamper-evident audit log: an append-only SHA-256 hash chain.

Each record's ``hash`` is SHA-256 over its canonical JSON (time, actor, action,
target, details) and the previous record's hash. :func:`record` must be called in
the same session/transaction as the change it records, so both commit or neither.
Each committed transaction's newest record, and every ``GUARDTUNE_AUDIT_ANCHOR_EVERY``-th,
is anchored outside the table (:mod:`core.audit.anchors`), so truncation and a recomputed
chain are detected too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.audit import anchors
from core.audit.repository import AuditRepository
from core.models import AuditRecord

GENESIS = "0" * 64
SYSTEM = "system"
_PG_LOCK_ID = 0x6775617264  # advisory lock serialising appends on Postgres


def canonical(created_at: float, actor: str, action: str, target: str | None, details: dict[str, Any]) -> str:
    return json.dumps(
        {"created_at": f"{created_at:.6f}", "actor": actor, "action": action, "target": target, "details": details},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def record(
    session: Session, *, actor: str, action: str, target: str | None = None, details: dict[str, Any] | None = None
) -> AuditRecord:
    """Append one record in ``session``'s transaction (flushed, not committed). Inside an API
    request, ``details`` gets the request's ``request_id`` (unless it has one)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
    last = AuditRepository(session).head()
    prev = last.hash if last else GENESIS
    details = json.loads(json.dumps(details or {}, default=str))
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id is not None:
        details.setdefault("request_id", request_id)
    created_at = round(time.time(), 6)
    entry = AuditRecord(
        created_at=created_at,
        actor=actor,
        action=action,
        target=target,
        details=details,
        prev_hash=prev,
        hash=chain_hash(prev, canonical(created_at, actor, action, target, details)),
    )
    session.add(entry)
    session.flush()
    anchors.note_appended(session, last.seq if last else 0, entry)
    return entry


class Chained(Protocol):
    """What :func:`verify` reads of a record: an :class:`AuditRecord`, or one read back from
    an export."""

    seq: int
    created_at: float
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str | None = None


def verify(records: Iterable[Chained], prev: str = GENESIS) -> VerifyResult:
    """Walk the chain in ``seq`` order from the hash ``prev`` (the genesis, or the record
    before an exported slice); report the first record that does not fit."""
    n = 0
    for rec in records:
        n += 1
        if rec.prev_hash != prev:
            return VerifyResult(False, n, rec.seq, "prev_hash does not match the previous record's hash")
        body = canonical(rec.created_at, rec.actor, rec.action, rec.target, rec.details)
        if chain_hash(prev, body) != rec.hash:
            return VerifyResult(False, n, rec.seq, "hash does not match the record's contents")
        prev = rec.hash
    return VerifyResult(True, n)
