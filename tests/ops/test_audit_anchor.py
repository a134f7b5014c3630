"""Audit anchors: the chain's head, HMAC-signed and kept in the object store every N
records and on demand, lets ``audit verify`` see what the hash chain alone cannot: the
newest records deleted, and a chain edited and recomputed from the edit on. Every test
runs on SQLite (local-folder store) and Postgres (S3 store)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from core.audit import anchors as audit_anchors
from core.audit import service as audit
from core.db import session_scope
from core.models import AuditRecord
from core.settings import get_settings
from core.storage import get_store
from tests.conftest import clear_caches


@pytest.fixture
def every_3(backend, monkeypatch):
    monkeypatch.setenv("GUARDTUNE_AUDIT_ANCHOR_EVERY", "3")
    clear_caches()
    return backend


def _records(ops, n: int) -> list[AuditRecord]:
    """``n`` audit records through the CLI (an org, then keys); all rows, in order."""
    ops("orgs", "create", "acme")
    for _ in range(n - 1):
        ops("keys", "create", "--org", "acme")
    with session_scope() as session:
        return list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def _anchor_seqs() -> list[int]:
    return [int(k.rsplit("/", 1)[1].split(".")[0]) for k in sorted(get_store().list(audit_anchors.PREFIX))]


def test_anchor_every_n_records_and_on_demand(every_3, ops):
    rows = _records(ops, 7)
    assert _anchor_seqs() == [rows[2].seq, rows[5].seq]  # after records 3 and 6
    stored = audit_anchors.latest()
    assert stored.hash == rows[5].hash
    assert stored.valid(get_settings().secret_key)
    assert not stored.valid("another-secret")
    out = ops("audit", "verify").stdout
    assert "7 records verified" in out
    assert f"matches the signed anchor at seq {rows[5].seq}" in out
    made = ops("audit", "anchor", "--json").json()
    assert made == {**made, "seq": rows[6].seq, "hash": rows[6].hash}
    assert ops("audit", "verify", "--json").json()["anchor_seq"] == rows[6].seq


def test_deleting_the_newest_records_is_detected(every_3, ops):
    rows = _records(ops, 6)
    assert ops("audit", "verify", "--json").json()["ok"] is True
    every_3.tamper("DELETE FROM audit_log WHERE seq >= :s", s=rows[4].seq)  # records 5 and 6
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert f"truncated: anchored record seq {rows[5].seq} is missing (the table ends at {rows[3].seq})" in result.stderr
    summary = ops("audit", "verify", "--json", ok=False)
    assert summary.exit_code == 1
    assert summary.json()["problem"].startswith("the log was truncated")


def test_expect_head_catches_a_truncation_after_the_last_anchor(backend, ops):
    """With no anchor covering them, deleted newest records pass the chain walk (the old
    defect); a head saved earlier does not."""
    rows = _records(ops, 4)
    saved = ops("audit", "verify", "--json").json()["head_hash"]
    assert saved == rows[-1].hash  # 4 records: below the default interval
    assert not _anchor_seqs()
    ops("keys", "create", "--org", "acme")  # a later record after the saved head is fine
    assert ops("audit", "verify", "--expect-head", saved).exit_code == 0
    backend.tamper("DELETE FROM audit_log WHERE seq >= :s", s=rows[2].seq)
    assert "audit chain intact" in ops("audit", "verify").stdout  # the chain alone cannot tell
    result = ops("audit", "verify", "--expect-head", saved, ok=False)
    assert result.exit_code == 1
    assert f"the expected head {saved} is not in the chain" in result.stderr


def _rewrite_from(backend, rows: list[AuditRecord], index: int) -> list[str]:
    """Change record ``index``'s actor and re-link every record after it, as a superuser
    would (the append-only triggers lifted); returns the new hashes from ``index`` on."""
    prev, hashes = rows[index].prev_hash, []
    backend.tamper("SELECT 1")  # lifts the triggers
    with backend.engine.begin() as conn:
        for rec in rows[index:]:
            actor = "ops:mallory" if rec.seq == rows[index].seq else rec.actor
            new = audit.chain_hash(prev, audit.canonical(rec.created_at, actor, rec.action, rec.target, rec.details))
            conn.execute(
                text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"a": actor, "p": prev, "h": new, "s": rec.seq},
            )
            prev = new
            hashes.append(new)
    with session_scope() as session:
        assert audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).ok  # consistent again
    return hashes


def test_a_recomputed_chain_is_detected(every_3, ops):
    rows = _records(ops, 6)
    _rewrite_from(every_3, rows, 1)
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert f"record seq {rows[5].seq} does not match its anchor: the chain was rewritten" in result.stderr
    assert ops("audit", "verify", "--expect-head", rows[5].hash, ok=False).exit_code == 1


def test_an_anchor_forged_without_the_secret_key_is_refused(every_3, ops, monkeypatch):
    rows = _records(ops, 6)
    hashes = _rewrite_from(every_3, rows, 1)
    real_key = get_settings().secret_key
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", "an-attacker-without-the-real-key-" + "y" * 32)
    clear_caches()
    audit_anchors.write(rows[5].seq, hashes[-1])  # re-anchor the rewritten head
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", real_key)
    clear_caches()
    assert audit_anchors.latest().hash == hashes[-1]
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert f"the newest anchor (seq {rows[5].seq}) has an invalid signature" in result.stderr
