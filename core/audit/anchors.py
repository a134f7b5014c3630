"""Anchors of the audit chain, kept outside the database: a truncated or recomputed
chain no longer verifies.

An anchor is the chain's head at one moment (``seq`` and ``hash``), signed with an HMAC
keyed by ``GUARDTUNE_SECRET_KEY`` and written to the object store under
``audit/anchors/<seq>.json``. One is written after the commit of every transaction whose
records cross a multiple of ``GUARDTUNE_AUDIT_ANCHOR_EVERY``, and on demand
(``guardtune-ops audit anchor``). Someone who can rewrite the table but does not hold
the secret key cannot forge an anchor for a rewritten or shortened chain; records
appended after the newest anchor are covered only by ``audit verify --expect-head``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
from dataclasses import asdict, dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session

from core.audit.repository import AuditRepository
from core.logging import get_logger
from core.models import AuditRecord
from core.settings import get_settings
from core.storage import ObjectStore, get_store

log = get_logger(__name__)

PREFIX = "audit/anchors/"
_DUE = "guardtune_audit_anchor_due"  # session.info key: (seq, hash) to anchor after commit


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    created_at: float
    hmac: str

    def valid(self, secret: str) -> bool:
        return hmac.compare_digest(self.hmac, sign(secret, self.seq, self.hash, self.created_at))


def sign(secret: str, seq: int, head_hash: str, created_at: float) -> str:
    body = json.dumps({"seq": seq, "hash": head_hash, "created_at": f"{created_at:.6f}"}, sort_keys=True)
    return hmac.new(f"guardtune-audit-anchor:{secret}".encode(), body.encode(), hashlib.sha256).hexdigest()


def anchor_key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}.json"


def write(seq: int, head_hash: str, store: ObjectStore | None = None) -> Anchor:
    """Sign and store an anchor for the record ``seq`` whose hash is ``head_hash``."""
    created_at = round(time.time(), 6)
    anchor = Anchor(seq, head_hash, created_at, sign(get_settings().secret_key, seq, head_hash, created_at))
    (store or get_store()).put_stream(anchor_key(seq), io.BytesIO(json.dumps(asdict(anchor)).encode()))
    return anchor


def anchor_head(session: Session) -> Anchor | None:
    """Anchor the table's current head (None when the log is empty)."""
    head = AuditRepository(session).head()
    return write(head.seq, head.hash) if head else None


def latest(store: ObjectStore | None = None) -> Anchor | None:
    """The anchor with the highest ``seq`` in the store (unverified: check :meth:`Anchor.valid`)."""
    store = store or get_store()
    keys = sorted(k for k in store.list(PREFIX) if k.endswith(".json"))
    if not keys:
        return None
    data = json.loads(b"".join(store.iter_chunks(keys[-1])))
    return Anchor(int(data["seq"]), str(data["hash"]), float(data["created_at"]), str(data["hmac"]))


def note_appended(session: Session, prev_seq: int, record: AuditRecord) -> None:
    """Called by :func:`core.audit.service.record`: mark the transaction's newest record for an
    anchor after the commit if this transaction crossed a multiple of the anchor interval."""
    every = get_settings().audit_anchor_every
    if every <= 0:
        return
    if _DUE in session.info or record.seq // every > prev_seq // every:
        session.info[_DUE] = (record.seq, record.hash)


@event.listens_for(Session, "after_commit")
def _write_due_anchor(session: Session) -> None:
    due = session.info.pop(_DUE, None)
    if due is None:
        return
    try:
        write(*due)
    except Exception as exc:  # the commit stands; the next interval (or `audit anchor`) anchors again
        log.warning("audit_anchor_failed", seq=due[0], error=f"{type(exc).__name__}: {exc}")


@event.listens_for(Session, "after_rollback")
def _forget_due_anchor(session: Session) -> None:
    session.info.pop(_DUE, None)
