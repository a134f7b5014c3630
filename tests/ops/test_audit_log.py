"""The ops CLI writes one audit record per mutating action, in order; ``audit verify``
walks the chain and names the first record altered behind its back; the table itself
refuses UPDATE and DELETE. Every test runs on SQLite and on Postgres."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from core.audit import service as audit
from core.db import session_scope
from core.models import AuditRecord, Organization
from core.orgs.service import OrgService
from core.settings import get_settings
from tests.ops.conftest import ACTOR
from tests.ops.factories import make_job

OPS = f"ops:{ACTOR}"


def _actions(ops) -> list[tuple[str, str, str | None]]:
    return [(r["actor"], r["action"], r["target"]) for r in ops("audit", "tail", "-n", "1000", "--json").json()]


def _sequence(ops, adapter_dir) -> dict[str, str]:
    """orgs, keys, a gate block, an override and a revocation, through the CLI."""
    org = ops("orgs", "create", "acme", "--json").json()
    admin = ops("keys", "create", "--org", "acme", "--admin", "--json").json()
    key = ops("keys", "create", "--org", org["id"], "--json").json()
    ops("keys", "revoke", key["id"], "--json")
    job = make_job(org["id"], adapter=adapter_dir)
    model = ops("release", "approve", job, "--reason", "false positive: eval prompts leaked", "--json").json()
    ops("release", "revoke", model["id"], "--reason", "customer asked", "--actor", "bob")
    return {
        "org": org["id"],
        "admin": admin["id"],
        "key": key["id"],
        "job": job,
        "model": model["id"],
        "secrets": [admin["key"], key["key"]],
    }


def test_actions_produce_audit_records_in_order_and_verify(backend, ops, adapter_dir):
    ids = _sequence(ops, adapter_dir)
    assert _actions(ops) == [
        (OPS, "org.create", ids["org"]),
        (OPS, "key.create", ids["admin"]),
        (OPS, "key.create", ids["key"]),
        (OPS, "key.revoke", ids["key"]),
        ("system", "gate.decision", ids["job"]),
        (OPS, "release.approve", ids["job"]),
        (OPS, "model.release", ids["model"]),
        ("ops:bob", "model.revoke", ids["model"]),
    ]
    records = ops("audit", "tail", "-n", "3", "--json").json()
    assert [r["action"] for r in records] == ["release.approve", "model.release", "model.revoke"]
    assert records[0]["details"]["reason"] == "false positive: eval prompts leaked"
    assert records[0]["details"]["gate_error"]["code"] == "safety_gate_blocked"
    assert records[2]["details"]["reason"] == "customer asked"
    exported = ops("audit", "export").stdout
    assert all(secret.startswith("gt-") and secret not in exported for secret in ids["secrets"])
    key_records = ops("audit", "show", "--target", ids["admin"], "--json").json()
    assert [r["action"] for r in key_records] == ["key.create"]
    assert key_records[0]["details"]["scope"] == "admin"

    result = ops("audit", "verify")
    assert "audit chain intact" in result.stdout
    assert "8 records verified" in result.stdout
    summary = ops("audit", "verify", "--json").json()
    assert summary["ok"] is True
    assert summary["checked"] == 8
    with session_scope() as session:
        head = session.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first()
        assert summary["head_hash"] == head.hash
        assert summary["head_seq"] == head.seq


def test_verify_names_the_altered_record(backend, ops, adapter_dir):
    _sequence(ops, adapter_dir)
    with session_scope() as session:
        seqs = list(session.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
    victim = seqs[5]  # release.approve: rewrite its reason
    backend.tamper(
        "UPDATE audit_log SET details = :d WHERE seq = :s",
        d=json.dumps({"reason": "routine", "org_id": "x"}),
        s=victim,
    )
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert f"broken at seq {victim}" in result.stderr
    assert "hash does not match the record's contents" in result.stderr
    summary = ops("audit", "verify", "--json", ok=False)
    assert summary.exit_code == 1
    assert summary.json()["broken_seq"] == victim
    assert summary.json()["ok"] is False


def test_verify_names_the_record_after_a_deleted_one(backend, ops, adapter_dir):
    _sequence(ops, adapter_dir)
    with session_scope() as session:
        seqs = list(session.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
    backend.tamper("DELETE FROM audit_log WHERE seq = :s", s=seqs[3])  # the key revocation
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert f"broken at seq {seqs[4]}" in result.stderr
    assert "prev_hash does not match" in result.stderr


def test_verify_catches_a_rehashed_record_at_its_successor(backend, ops, adapter_dir):
    """Recomputing the altered record's own hash does not help: the next link breaks."""
    _sequence(ops, adapter_dir)
    with session_scope() as session:
        rec = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()[1]
        forged = audit.chain_hash(
            rec.prev_hash, audit.canonical(rec.created_at, "ops:mallory", rec.action, rec.target, rec.details)
        )
        seq, next_seq = (
            rec.seq,
            session.scalars(select(AuditRecord.seq).where(AuditRecord.seq > rec.seq).order_by(AuditRecord.seq)).first(),
        )
    backend.tamper("UPDATE audit_log SET actor = 'ops:mallory', hash = :h WHERE seq = :s", h=forged, s=seq)
    result = ops("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert f"broken at seq {next_seq}" in result.stderr


def test_audit_table_refuses_update_and_delete(backend, ops):
    ops("orgs", "create", "acme")
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), backend.engine.begin() as conn:
            conn.execute(text(statement))
    assert [a for _, a, _ in _actions(ops)] == ["org.create"]
    assert _actions(ops)[0][0] == OPS
    ops("audit", "verify")


def test_change_and_record_share_one_transaction(backend, monkeypatch):
    """If the audit record cannot be written, the change it records is rolled back too."""

    def broken_record(*args, **kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record", broken_record)
    with pytest.raises(RuntimeError), session_scope() as session:
        OrgService(session, get_settings()).create("ghost", actor="ops:x")
    monkeypatch.undo()
    with session_scope() as session:
        assert session.scalar(select(Organization).where(Organization.name == "ghost")) is None
        assert session.scalar(select(AuditRecord)) is None


def test_export_since_and_verify_the_export(backend, ops, tmp_path):
    ops("orgs", "create", "early")
    with session_scope() as session:
        first = session.scalar(select(AuditRecord))
    time.sleep(1.1)
    cut = int(time.time())
    time.sleep(0.1)
    ops("orgs", "create", "late")
    ops("keys", "create", "--org", "late")

    everything = [json.loads(line) for line in ops("audit", "export", "--since", "1970-01-01").stdout.splitlines()]
    assert [r["action"] for r in everything] == ["org.create", "org.create", "key.create"]
    assert everything[0]["hash"] == first.hash
    assert everything[0]["prev_hash"] == audit.GENESIS

    recent = [json.loads(line) for line in ops("audit", "export", "--since", str(cut)).stdout.splitlines()]
    assert [r["action"] for r in recent] == ["org.create", "key.create"]
    assert recent[0]["details"] == {"name": "late"}
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cut))
    assert [json.loads(x) for x in ops("audit", "export", "--since", iso).stdout.splitlines()] == recent
    assert ops("audit", "export", "--since", "yesterday-ish", ok=False).exit_code == 2

    path = tmp_path / "audit.jsonl"
    ops("audit", "export", "--since", "1970-01-01", "-o", str(path))
    assert "3 records verified" in ops("audit", "verify", "--file", str(path)).stdout
    partial = tmp_path / "recent.jsonl"
    ops("audit", "export", "--since", str(cut), "-o", str(partial))
    assert "anchored" in ops("audit", "verify", "--file", str(partial)).stdout
    rows = path.read_text().splitlines()
    doctored = json.loads(rows[1])
    doctored["details"]["name"] = "someone-else"
    path.write_text("\n".join([rows[0], json.dumps(doctored), rows[2]]) + "\n")
    bad = ops("audit", "verify", "--file", str(path), ok=False)
    assert bad.exit_code == 1
    assert f"seq {doctored['seq']}" in bad.stderr


def test_audit_show_and_tail_tables(backend, ops, adapter_dir):
    ids = _sequence(ops, adapter_dir)
    story = ops("audit", "show", "--target", ids["job"], "--json").json()
    assert [r["action"] for r in story] == ["gate.decision", "release.approve", "model.release", "model.revoke"]
    exact = ops("audit", "show", "--target", ids["job"], "--exact", "--json").json()
    assert [r["action"] for r in exact] == ["gate.decision", "release.approve"]
    by_bob = ops("audit", "show", "--actor", "ops:bob", "--json").json()
    assert [r["action"] for r in by_bob] == ["model.revoke"]
    table = ops("audit", "tail", "-n", "2").stdout
    assert "model.release" in table
    assert "model.revoke" in table
    assert "ops:bob" in table
    assert "org.create" not in table
    assert ops("audit", "show", ok=False).exit_code == 2
