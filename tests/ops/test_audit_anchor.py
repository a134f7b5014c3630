"""Audit anchors: every committed head and every N-th record, HMAC-signed with the audit
signing key and stored write-once, let ``audit verify`` see what the hash chain alone cannot:
the newest records deleted (with or without their anchors), records deleted from the middle
and the chain re-linked, a gap in the anchors, a forged anchor. Every test runs on SQLite
(local-folder store) and Postgres (an S3 bucket with Object Lock on the moto server)."""

from __future__ import annotations

import secrets

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from core.audit import anchors as audit_anchors
from core.audit import service as audit
from core.db import session_scope
from core.models import AuditRecord
from core.settings import get_settings
from core.storage import LocalStore, S3Store, WriteOnceViolation, get_store
from tests.conftest import clear_caches

SIGNING_KEY = "audit-signing-key-" + "s" * 32


@pytest.fixture
def anchored(backend, monkeypatch, request):
    """The backend, anchors signed with :data:`SIGNING_KEY`; on Postgres the store is an
    S3 bucket with Object Lock and anchors are kept under a day's compliance retention."""
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", SIGNING_KEY)
    if backend.name == "postgres":
        bucket = request.getfixturevalue("locked_bucket")
        prefix = backend.url.rsplit("/", 1)[1]
        monkeypatch.setenv("GUARDTUNE_STORAGE_URL", f"s3://{bucket}/{prefix}")
        monkeypatch.setenv("GUARDTUNE_AUDIT_ANCHOR_RETENTION_DAYS", "1")
    clear_caches()
    return backend


@pytest.fixture
def every_3(anchored, monkeypatch):
    monkeypatch.setenv("GUARDTUNE_AUDIT_ANCHOR_EVERY", "3")
    clear_caches()
    return anchored


def _rows() -> list[AuditRecord]:
    with session_scope() as session:
        return list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def _records(ops, n: int) -> list[AuditRecord]:
    """``n`` audit records through the CLI, one commit each (an org, then keys); all rows."""
    ops("orgs", "create", "acme")
    for _ in range(n - 1):
        ops("keys", "create", "--org", "acme")
    return _rows()


def _anchor_seqs() -> list[int]:
    return [audit_anchors.seq_of(k) for k in get_store().list(audit_anchors.PREFIX)]


def _remove_anchor(seq: int) -> None:
    """Delete an anchor behind the store's back: the file from disk, or a plain S3 delete
    (which, on a versioned bucket, leaves a delete marker over the locked version)."""
    store = get_store()
    key = audit_anchors.anchor_key(seq)
    if isinstance(store, LocalStore):
        (store.root / key).unlink()
    else:
        assert isinstance(store, S3Store)
        store.client.delete_object(Bucket=store.bucket, Key=store._key(key))


def _problems(ops) -> list[str]:
    summary = ops("audit", "verify", "--json", ok=False)
    assert summary.exit_code == 1
    return summary.json()["problems"]


def test_every_commit_anchors_its_head_and_the_grid(every_3, ops):
    with session_scope() as session:  # one commit of five records: the grid's third and the head
        for i in range(5):
            audit.record(session, actor="ops:test", action="test.batch", target=f"t-{i}")
    with session_scope() as session:  # the sixth crosses the grid, the seventh is the head
        for i in range(5, 7):
            audit.record(session, actor="ops:test", action="test.batch", target=f"t-{i}")
    rows = _rows()
    assert [r.seq for r in rows] == list(range(1, 8))
    assert _anchor_seqs() == [3, 5, 6, 7]
    stored = audit_anchors.read(7)
    assert stored.hash == rows[6].hash
    assert stored.valid(get_settings())
    out = ops("audit", "verify").stdout
    assert "7 records verified" in out
    assert "matches the signed anchor at seq 7" in out


def test_anchors_are_write_once(anchored, ops):
    rows = _records(ops, 2)
    with pytest.raises(WriteOnceViolation):
        audit_anchors.write(rows[-1].seq, "0" * 64)
    assert audit_anchors.read(rows[-1].seq).hash == rows[-1].hash
    assert ops("audit", "anchor", "--json").json()["written"] == []  # the head was anchored at its commit
    store = get_store()
    key = audit_anchors.anchor_key(rows[-1].seq)
    if isinstance(store, LocalStore):
        with pytest.raises(WriteOnceViolation):
            store.delete(key)
        with pytest.raises(WriteOnceViolation):
            store.delete_prefix("audit")
        assert store.exists(key)
        return
    assert isinstance(store, S3Store)
    versions = store.client.list_object_versions(Bucket=store.bucket, Prefix=store._key(key))["Versions"]
    with pytest.raises(ClientError, match="AccessDenied"):  # Object Lock: the version cannot be destroyed
        store.client.delete_object(Bucket=store.bucket, Key=store._key(key), VersionId=versions[0]["VersionId"])


def test_deleting_the_newest_record_is_detected(anchored, ops):
    rows = _records(ops, 4)
    assert ops("audit", "verify", "--json").json()["ok"] is True
    anchored.tamper("DELETE FROM audit_log WHERE seq = :s", s=rows[-1].seq)
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    expected = f"truncated: anchored record seq {rows[-1].seq} is missing (the table ends at {rows[-2].seq})"
    assert expected in result.stderr
    assert _problems(ops)[0].startswith("the log was truncated")


def test_deleting_the_newest_anchor_and_records_is_detected(anchored, ops):
    rows = _records(ops, 6)
    _remove_anchor(rows[-1].seq)
    anchored.tamper("DELETE FROM audit_log WHERE seq >= :s", s=rows[3].seq)  # records 4-6
    problems = _problems(ops)
    assert f"the log was truncated: anchored record seq {rows[4].seq} is missing (the table ends at 3)" in problems


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_rollback_with_every_newer_anchor_shows_on_versioned_s3(anchored, ops):
    """All anchors after record 3 and the records deleted: the table and the listed anchors
    agree, but the bucket keeps the locked versions under their delete markers (a local
    folder keeps no versions: there the anchors are write-once only through the store)."""
    rows = _records(ops, 6)
    for rec in rows[3:]:
        _remove_anchor(rec.seq)
    anchored.tamper("DELETE FROM audit_log WHERE seq >= :s", s=rows[3].seq)
    problems = _problems(ops)
    assert problems[0] == f"the anchor of seq {rows[3].seq} was deleted from the store (a version remains)"


def test_a_gap_in_the_grid_is_detected(every_3, ops):
    rows = _records(ops, 7)
    _remove_anchor(rows[2].seq)
    problems = _problems(ops)
    assert any(p.startswith(f"the grid record seq {rows[2].seq} has no anchor") for p in problems)


def test_a_missing_head_anchor_is_detected_and_anchor_writes_it(anchored, ops, monkeypatch):
    """A head whose anchor write failed (the store was down) fails verification until an
    operator anchors it."""

    def store_down(*args, **kwargs):
        raise ConnectionError("store unreachable")

    _records(ops, 2)
    with monkeypatch.context() as patched:
        patched.setattr(audit_anchors, "write_missing", store_down)
        ops("keys", "create", "--org", "acme")
    head = _rows()[-1]
    assert f"the head record seq {head.seq} has no anchor" in _problems(ops)[0]
    written = ops("audit", "anchor", "--json").json()["written"]
    assert [w["seq"] for w in written] == [head.seq]
    assert ops("audit", "verify", "--json").json()["ok"] is True


def test_fill_writes_the_grid_anchors_a_new_interval_expects(anchored, ops, monkeypatch):
    _records(ops, 5)
    monkeypatch.setenv("GUARDTUNE_AUDIT_ANCHOR_EVERY", "2")
    clear_caches()
    written = ops("audit", "anchor", "--fill", "--json").json()["written"]
    assert written == []  # one commit per record: every record is anchored already
    with session_scope() as session:
        for i in range(4):  # seqs 6-9 in one commit: the grid records 6 and 8, the head 9
            audit.record(session, actor="ops:test", action="test.batch", target=f"t-{i}")
    assert _anchor_seqs() == [1, 2, 3, 4, 5, 6, 8, 9]
    monkeypatch.setenv("GUARDTUNE_AUDIT_ANCHOR_EVERY", "7")
    clear_caches()
    assert any(p.startswith("the grid record seq 7 has no anchor") for p in _problems(ops))
    assert [w["seq"] for w in ops("audit", "anchor", "--fill", "--json").json()["written"]] == [7]
    assert ops("audit", "verify", "--json").json()["ok"] is True


def _relink(backend, rows: list[AuditRecord], index: int, actor: str | None = None) -> list[str]:
    """Re-link every record from ``rows[index]`` on (changing its actor when given), as a
    superuser would with the append-only triggers lifted; returns the new hashes."""
    prev, hashes = rows[index - 1].hash if index else audit.GENESIS, []
    backend.tamper("SELECT 1")  # lifts the triggers
    with backend.engine.begin() as conn:
        for i, rec in enumerate(rows[index:]):
            who = actor if (actor and i == 0) else rec.actor
            new = audit.chain_hash(prev, audit.canonical(rec.created_at, who, rec.action, rec.target, rec.details))
            conn.execute(
                text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"a": who, "p": prev, "h": new, "s": rec.seq},
            )
            prev = new
            hashes.append(new)
    assert _chain_ok()
    return hashes


def _chain_ok() -> bool:
    with session_scope() as session:
        return audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).ok


def test_dropping_the_trigger_and_deleting_middle_records_is_detected(anchored, ops):
    rows = _records(ops, 6)
    anchored.tamper("DELETE FROM audit_log WHERE seq IN (:a, :b)", a=rows[2].seq, b=rows[3].seq)
    kept = [r for r in rows if r.seq not in (rows[2].seq, rows[3].seq)]
    _relink(anchored, kept, 2)  # records 5 and 6 now follow record 2: the chain alone verifies
    problems = _problems(ops)
    assert f"record seq {rows[-1].seq} does not match its anchor: the chain was rewritten" in problems
    assert f"anchored record seq {rows[2].seq} is missing from the table: records were deleted" in problems


def test_a_recomputed_chain_is_detected(every_3, ops):
    rows = _records(ops, 6)
    _relink(every_3, rows, 1, actor="ops:mallory")
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert "record seq 3 does not match its anchor: the chain was rewritten (and 1 more problems)" in result.stderr
    assert _problems(ops) == [  # the grid record 3 and the grid record 6, also the head: each read once
        f"record seq {seq} does not match its anchor: the chain was rewritten" for seq in (3, 6)
    ]
    assert ops("audit", "verify", "--expect-head", rows[5].hash, ok=False).exit_code == 1


def test_an_anchor_forged_without_the_signing_key_is_refused(anchored, ops, monkeypatch):
    """A record appended behind the app's back, anchored with the key-hash pepper (which
    no longer signs anchors)."""
    rows = _records(ops, 3)
    fake = audit.chain_hash(rows[-1].hash, audit.canonical(1.0, "ops:mallory", "org.create", "x", {}))
    anchored.tamper(
        "INSERT INTO audit_log (created_at, actor, action, target, details, prev_hash, hash) "
        "VALUES (1.0, 'ops:mallory', 'org.create', 'x', '{}', :p, :h)",
        p=rows[-1].hash,
        h=fake,
    )
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", get_settings().secret_key + "-guess")
    clear_caches()
    audit_anchors.write(rows[-1].seq + 1, fake)
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", SIGNING_KEY)
    clear_caches()
    problems = _problems(ops)
    assert problems == [
        f"the anchor of seq {rows[-1].seq + 1} has an invalid signature: forged, or an unknown signing key"
    ]


def test_signing_key_rotation_keeps_old_anchors_verifying(anchored, ops, monkeypatch):
    _records(ops, 2)
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", "a-new-audit-signing-key-" + "n" * 32)
    clear_caches()
    assert _problems(ops)[0].endswith("has an invalid signature: forged, or an unknown signing key")
    monkeypatch.setenv("GUARDTUNE_AUDIT_PREVIOUS_SIGNING_KEYS", f'["{SIGNING_KEY}"]')
    clear_caches()
    ops("keys", "create", "--org", "acme")  # anchored with the new key
    assert ops("audit", "verify", "--json").json()["ok"] is True
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", "a-rotated-key-pepper-" + "p" * 32)  # the pepper is not the signer
    clear_caches()
    assert ops("audit", "verify", "--json").json()["ok"] is True


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_role_that_does_not_own_the_table_cannot_lift_the_append_only_trigger(backend, ops):
    """The deployment the README describes: migrations run as the table's owner, the app as
    a role with only row privileges, which can neither delete records nor drop the trigger."""
    _records(ops, 1)
    role = f"gt_app_{secrets.token_hex(4)}"
    with backend.engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}"'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'))
    try:
        for statement, refusal in [
            ("DELETE FROM audit_log", "append-only"),
            ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only", "must be owner"),
            ("DROP TRIGGER audit_log_append_only ON audit_log", "must be owner"),
        ]:
            with backend.engine.connect() as conn:
                conn.execute(text(f'SET ROLE "{role}"'))
                with pytest.raises(DBAPIError, match=refusal):
                    conn.execute(text(statement))
    finally:
        with backend.engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
