"""Anchors of the audit chain, kept outside the database: a truncated or recomputed
chain no longer verifies.

An anchor is one record's ``seq`` and ``hash``, signed with an HMAC keyed by
``GUARDTUNE_AUDIT_SIGNING_KEY`` (not the key-hash pepper) and stored write-once
(:meth:`core.storage.ObjectStore.put_once`) under ``audit/anchors/<seq>.json``. After
the commit of every transaction that appended records, one is written for the
transaction's newest record (the head: every append is anchored, one small object per
audited commit) and one for each record that crossed a multiple of
``GUARDTUNE_AUDIT_ANCHOR_EVERY`` (the grid, which verification can predict from the table
alone). :mod:`core.audit.anchor_check` holds what verification expects of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session

from core.logging import get_logger
from core.models import AuditRecord
from core.settings import Settings, get_settings
from core.storage import ObjectStore, WriteOnceViolation, get_store

log = get_logger(__name__)

PREFIX = "audit/anchors/"
# session.info keys: the grid records ({seq: hash}) and the head ((seq, hash)) to anchor after commit
_GRID, _HEAD = "guardtune_audit_grid_due", "guardtune_audit_head_due"


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    created_at: float
    hmac: str
    key_id: str | None = None  # which signing key (None: an anchor from before key ids)

    def valid(self, settings: Settings) -> bool:
        """Signed by the current or a previous audit signing key."""
        return any(
            hmac.compare_digest(self.hmac, sign(key, self.seq, self.hash, self.created_at))
            for key in signing_keys(settings)
            if self.key_id is None or key_id(key) == self.key_id
        )


def signing_keys(settings: Settings) -> list[str]:
    return [settings.anchor_signing_key, *settings.audit_previous_signing_keys]


def key_id(key: str) -> str:
    """A short public name of a signing key (a hash: it reveals nothing of the key)."""
    return hashlib.sha256(f"guardtune-audit-key-id:{key}".encode()).hexdigest()[:16]


def sign(key: str, seq: int, head_hash: str, created_at: float) -> str:
    body = json.dumps({"seq": seq, "hash": head_hash, "created_at": f"{created_at:.6f}"}, sort_keys=True)
    return hmac.new(f"guardtune-audit-anchor:{key}".encode(), body.encode(), hashlib.sha256).hexdigest()


def anchor_key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}.json"


def seq_of(key: str) -> int:
    """The ``seq`` an anchor key names."""
    return int(key.rsplit("/", 1)[1].split(".")[0])


def write(seq: int, head_hash: str, store: ObjectStore | None = None) -> Anchor:
    """Sign and store an anchor for the record ``seq`` whose hash is ``head_hash``;
    :class:`WriteOnceViolation` if that record is anchored already."""
    settings = get_settings()
    created_at = round(time.time(), 6)
    key = settings.anchor_signing_key
    anchor = Anchor(seq, head_hash, created_at, sign(key, seq, head_hash, created_at), key_id(key))
    (store or get_store()).put_once(anchor_key(seq), json.dumps(asdict(anchor)).encode())
    return anchor


def read(seq: int, store: ObjectStore | None = None) -> Anchor | None:
    """The stored anchor of record ``seq`` (unverified: check :meth:`Anchor.valid`), or None."""
    store = store or get_store()
    if not store.exists(anchor_key(seq)):
        return None
    data = json.loads(b"".join(store.iter_chunks(anchor_key(seq))))
    return Anchor(int(data["seq"]), str(data["hash"]), float(data["created_at"]), str(data["hmac"]), data.get("key_id"))


def write_missing(due: Iterable[tuple[int, str]], store: ObjectStore | None = None) -> list[Anchor]:
    """Anchor each ``(seq, hash)`` not anchored yet; the anchors written."""
    store = store or get_store()
    written = []
    for seq, hash_ in due:
        try:
            written.append(write(seq, hash_, store))
        except WriteOnceViolation:
            continue
    return written


def crosses_grid(prev_seq: int, seq: int, every: int) -> bool:
    """Whether the record ``seq`` following ``prev_seq`` (0: the first) is a grid record:
    the first at or past a multiple of ``every``."""
    return seq // every > prev_seq // every


def note_appended(session: Session, prev_seq: int, record: AuditRecord) -> None:
    """Called by :func:`core.audit.service.record`: a grid record is due for an anchor after
    the commit, and so is the transaction's newest record (its head)."""
    grid: dict[int, str] = session.info.setdefault(_GRID, {})
    if crosses_grid(prev_seq, record.seq, get_settings().audit_anchor_every):
        grid[record.seq] = record.hash
    session.info[_HEAD] = (record.seq, record.hash)


@event.listens_for(Session, "after_commit")
def _write_due_anchors(session: Session) -> None:
    grid, head = session.info.pop(_GRID, {}), session.info.pop(_HEAD, None)
    if head is None:
        return
    try:
        write_missing(sorted({**grid, head[0]: head[1]}.items()))
    except Exception as exc:  # the commit stands; `audit verify` reports the gap, `audit anchor --fill` closes it
        log.warning("audit_anchor_failed", seq=head[0], error=f"{type(exc).__name__}: {exc}")


@event.listens_for(Session, "after_rollback")
def _forget_due_anchors(session: Session) -> None:
    session.info.pop(_GRID, None)
    session.info.pop(_HEAD, None)
