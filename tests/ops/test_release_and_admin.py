"""Releases (override, revoke), keys, orgs, jobs and models through the ops CLI and
the shared services of core.releases / core.orgs, on SQLite and Postgres."""

from __future__ import annotations

import hashlib
import sys
import types

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.errors import Conflict
from core.models import ApiKey, AuditRecord, BaseModelEntry, Job, JobEvent, ReleasedModel, SafetyReport
from core.orgs.apikeys import hash_key
from core.releases import digests
from core.releases import service as releases
from core.settings import get_settings
from core.storage import get_store, upload_dir
from tests.ops.factories import make_job


def _org(ops, name="acme") -> str:
    return ops("orgs", "create", name, "--json").json()["id"]


def _audit_count() -> int:
    with session_scope() as session:
        return len(session.scalars(select(AuditRecord)).all())


def test_adapter_digest_matches_the_documented_formula(backend, adapter_dir):
    files = sorted(p.name for p in adapter_dir.iterdir())
    expected = hashlib.sha256(
        "".join(f"{name}\n{hashlib.sha256((adapter_dir / name).read_bytes()).hexdigest()}\n" for name in files).encode()
    ).hexdigest()
    assert digests.dir_sha256(adapter_dir) == expected
    prefix = digests.adapter_prefix("org-1", "ftjob-1")
    upload_dir(get_store(), adapter_dir, prefix)
    assert digests.adapter_sha256(get_store(), prefix) == expected
    (adapter_dir / "adapter_config.json").write_text("{}")
    assert digests.dir_sha256(adapter_dir) != expected


def test_approve_releases_a_blocked_adapter_with_its_reason(backend, ops, adapter_dir):
    org = _org(ops)
    job_id = make_job(org, adapter=adapter_dir, suffix="support-bot")
    out = ops("release", "approve", job_id, "--reason", "judge outage inflated ASR", "--json").json()

    assert out["id"] == f"ft:smollm2-135m-instruct:{org}:support-bot:{job_id}"
    assert out["sha256"] == digests.dir_sha256(adapter_dir)
    assert out["status"] == "serving"
    assert out["job_id"] == job_id
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.error, job.fine_tuned_model) == ("succeeded", None, out["id"])
        released = session.get(ReleasedModel, out["id"])
        assert released.storage_prefix == digests.adapter_prefix(org, job_id)
        assert released.revoked_at is None
        gate = session.get(SafetyReport, job_id).gate
        assert gate["override"]["reason"] == "judge outage inflated ASR"
        assert gate["override"]["actor"] == "ops:tester"
        assert gate["override"]["blocked_error"]["code"] == "safety_gate_blocked"
        last_event = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc())
        ).first()
        assert "overriding the safety gate" in last_event.message
        assert "judge outage" in last_event.message
    story = ops("audit", "show", "--target", job_id, "--json").json()
    assert [(r["action"], r["actor"]) for r in story] == [
        ("gate.decision", "system"),
        ("release.approve", "ops:tester"),
        ("model.release", "ops:tester"),
    ]
    assert story[1]["details"]["reason"] == story[2]["details"]["reason"] == "judge outage inflated ASR"
    assert story[2]["details"]["sha256"] == out["sha256"]

    shown = ops("jobs", "show", job_id, "--json").json()
    assert shown["status"] == "succeeded"
    assert shown["released_model"]["id"] == out["id"]

    # a second approval is refused and writes nothing
    before = _audit_count()
    again = ops("release", "approve", job_id, "--reason", "twice", ok=False)
    assert again.exit_code == 1
    assert "only jobs failed with safety_gate_blocked" in again.stderr
    assert _audit_count() == before


def test_approve_refuses_jobs_that_were_not_blocked_or_lack_an_adapter(backend, ops, adapter_dir):
    org = _org(ops)
    other_failure = make_job(org, error={"code": "unsafe_training_file", "message": "flagged"}, adapter=adapter_dir)
    no_adapter = make_job(org)
    before = _audit_count()
    r1 = ops("release", "approve", other_failure, "--reason", "x", ok=False)
    assert r1.exit_code == 1
    assert "unsafe_training_file" in r1.stderr
    r2 = ops("release", "approve", no_adapter, "--reason", "x", ok=False)
    assert r2.exit_code == 1
    assert "no stored adapter" in r2.stderr
    r3 = ops("release", "approve", no_adapter, "--reason", "  ", ok=False)
    assert r3.exit_code == 1
    assert "reason is required" in r3.stderr
    r4 = ops("release", "approve", "ftjob-missing", "--reason", "x", ok=False)
    assert r4.exit_code == 1
    assert "no job" in r4.stderr
    assert _audit_count() == before
    with session_scope() as session:
        assert session.get(Job, no_adapter).status == "failed"
        assert session.scalar(select(ReleasedModel)) is None


def test_revoke_marks_the_model_revoked_and_lists_it(backend, ops, adapter_dir):
    org = _org(ops)
    model = ops("release", "approve", make_job(org, adapter=adapter_dir), "--reason", "ok", "--json").json()["id"]
    assert [m["id"] for m in ops("release", "list", "--serving", "--json").json()] == [model]
    out = ops("release", "revoke", model, "--reason", "leaked PII in outputs", "--json").json()
    assert out["status"] == "revoked"
    assert out["revoke_reason"] == "leaked PII in outputs"
    assert out["revoked_at"]
    assert ops("release", "list", "--serving", "--json").json() == []
    assert [m["id"] for m in ops("release", "list", "--revoked", "--org", "acme", "--json").json()] == [model]
    again = ops("release", "revoke", model, "--reason", "again", ok=False)
    assert again.exit_code == 1
    assert "already revoked" in again.stderr
    assert ops("release", "revoke", "ft:nope", "--reason", "x", ok=False).exit_code == 1
    record = ops("audit", "tail", "-n", "1", "--json").json()[0]
    assert (record["action"], record["target"], record["details"]["reason"]) == (
        "model.revoke",
        model,
        "leaked PII in outputs",
    )


def test_release_job_is_idempotent_for_the_pipeline(backend, ops, adapter_dir):
    org = _org(ops)
    job_id = make_job(org, status="succeeded", error=None, suffix="")
    with session_scope() as session:
        job = session.get(Job, job_id)
        first = releases.release_job(session, job, actor="system", sha256="a" * 64, storage_prefix="p")
        assert first.id == f"ft:smollm2-135m-instruct:{org}::{job_id}"
        again = releases.release_job(session, job, actor="system", sha256="a" * 64, storage_prefix="p")
        assert again is first
        with pytest.raises(Conflict):
            releases.release_job(session, job, actor="system", sha256="b" * 64, storage_prefix="p")
    actions = [r["action"] for r in ops("audit", "tail", "--json").json()]
    assert actions.count("model.release") == 1


def test_keys_create_list_revoke(backend, ops):
    _org(ops)
    created = ops("keys", "create", "--org", "acme", "--name", "ci")
    assert "shown only once" in created.stderr
    plaintext = created.stdout.split("key:")[1].split()[0]
    with session_scope() as session:
        row = session.scalar(select(ApiKey))
        assert row.key_hash == hash_key(plaintext, get_settings().secret_key)
        assert row.scope == "customer"
        assert row.name == "ci"
    listing = ops("keys", "list", "--org", "acme", "--json")
    assert plaintext not in listing.stdout
    keys = listing.json()
    assert [(k["id"], k["prefix"], k["revoked_at"]) for k in keys] == [(row.id, plaintext[:10], None)]
    ops("keys", "revoke", row.id)
    assert ops("keys", "list", "--org", "acme", "--json").json()[0]["revoked_at"] is not None
    assert ops("keys", "revoke", row.id, ok=False).exit_code == 1
    missing_org = ops("keys", "create", "--org", "nobody", ok=False)
    assert missing_org.exit_code == 1
    assert "no organization" in missing_org.stderr
    table = ops("keys", "list", "--org", "acme").stdout
    assert row.id in table
    assert plaintext not in table


def test_orgs_create_list(backend, ops):
    org = _org(ops)
    dup = ops("orgs", "create", "acme", ok=False)
    assert dup.exit_code == 1
    assert "already exists" in dup.stderr
    ops("keys", "create", "--org", "acme")
    make_job(org)
    assert [(o["name"], o["active_keys"], o["jobs"]) for o in ops("orgs", "list", "--json").json()] == [("acme", 1, 1)]
    assert "acme" in ops("orgs", "list").stdout


def test_orgs_allow_modes_sets_and_resets_the_override_audited(backend, ops):
    org = _org(ops)
    before = _audit_count()
    out = ops("orgs", "allow-modes", "acme", "adaptive", "none", "adaptive", "--json").json()
    assert out["allowed_modes"] == ["adaptive", "none"]
    for bad, says in [
        (["allow-modes", "acme", "yolo"], "unknown safety mode(s) yolo"),
        (["allow-modes", "acme"], "give the modes, or --default"),
        (["allow-modes", "acme", "none", "--default"], "give the modes, or --default"),
        (["allow-modes", "nobody", "none"], "no organization"),
    ]:
        refused = ops("orgs", *bad, ok=False)
        assert refused.exit_code == 1
        assert says in refused.stderr
    assert ops("orgs", "allow-modes", org, "--default", "--json").json()["allowed_modes"] is None
    with session_scope() as session:
        records = session.scalars(select(AuditRecord).where(AuditRecord.seq > before).order_by(AuditRecord.seq)).all()
        assert [(r.action, r.target, r.actor) for r in records] == [("org.update", org, "ops:tester")] * 2
        assert records[0].details == {
            "before": {"allowed_modes": None},
            "after": {"allowed_modes": ["adaptive", "none"]},
        }
        assert records[1].details["after"] == {"allowed_modes": None}


def test_orgs_gpu_weight_sets_and_resets_the_weight_audited(backend, ops):
    org = _org(ops)
    before = _audit_count()
    assert ops("orgs", "gpu-weight", "acme", "3", "--json").json()["gpu_weight"] == 3
    for bad, says in [
        (["gpu-weight", "acme", "0"], "the weight must be 1 to 1000, not 0"),
        (["gpu-weight", "acme"], "give the weight, or --default"),
        (["gpu-weight", "acme", "2", "--default"], "give the weight, or --default"),
        (["gpu-weight", "nobody", "2"], "no organization"),
    ]:
        refused = ops("orgs", *bad, ok=False)
        assert refused.exit_code == 1
        assert says in refused.stderr
    assert ops("orgs", "gpu-weight", org, "--default", "--json").json()["gpu_weight"] is None
    with session_scope() as session:
        records = session.scalars(select(AuditRecord).where(AuditRecord.seq > before).order_by(AuditRecord.seq)).all()
        assert [(r.action, r.details) for r in records] == [
            ("org.update", {"before": {"gpu_weight": None}, "after": {"gpu_weight": 3}}),
            ("org.update", {"before": {"gpu_weight": 3}, "after": {"gpu_weight": None}}),
        ]


def test_jobs_list_and_show(backend, ops, adapter_dir):
    acme, globex = _org(ops, "acme"), _org(ops, "globex")
    blocked = make_job(acme, adapter=adapter_dir)
    done = make_job(globex, status="succeeded", error=None)
    assert [j["id"] for j in ops("jobs", "list", "--json").json()] == [done, blocked]
    assert [j["id"] for j in ops("jobs", "list", "--org", "acme", "--json").json()] == [blocked]
    assert [j["id"] for j in ops("jobs", "list", "--status", "succeeded", "--json").json()] == [done]
    assert ops("jobs", "list", "--status", "nope", ok=False).exit_code == 2
    table = ops("jobs", "list").stdout
    assert blocked in table
    assert "safety_gate_blocked" in table

    shown = ops("jobs", "show", blocked, "--events", "2", "--json").json()
    assert shown["error"]["code"] == "safety_gate_blocked"
    assert shown["org"] == "acme"
    assert shown["events_total"] == 4
    assert [e["message"] for e in shown["events"]] == ["Training started", "step 10"]
    assert shown["safety_report"]["training"]["regularized_share"] == 0.3
    assert shown["released_model"] is None
    text_out = ops("jobs", "show", blocked).stdout
    for needle in ("stages", "safety report", "regularized_share", "Training started", "safety_gate_blocked"):
        assert needle in text_out
    assert ops("jobs", "show", "ftjob-nope", ok=False).exit_code == 1


def test_models_onboard_without_self_auditing_pipeline_and_on_failure(backend, ops, monkeypatch):
    """An onboarding function that takes no actor gets its outcome recorded by the CLI;
    a failing one leaves a model.onboard_failed record and a non-zero exit."""
    calls = []

    def onboard_base_model(model_id):
        calls.append(model_id)
        with session_scope() as session:
            entry = session.get(BaseModelEntry, model_id)
            entry.status, entry.probe_prefix = "ready", f"models/{model_id}/probe"
            entry.baseline = {"asr_keyword": 0.04, "over_refusal": 0.1}
        return {"probe_auroc": 0.97}

    fake = types.ModuleType("worker.pipeline.onboard")
    fake.onboard_base_model = onboard_base_model
    monkeypatch.setitem(sys.modules, "worker.pipeline.onboard", fake)

    missing = ops("models", "onboard", "tiny", ok=False)
    assert missing.exit_code == 1
    assert "--source" in missing.stderr
    out = ops("models", "onboard", "tiny", "--source", "/models/tiny", "--json").json()
    assert calls == ["tiny"]
    assert out["status"] == "ready"
    assert out["result"] == {"probe_auroc": 0.97}
    listed = {m["id"]: m for m in ops("models", "list", "--json").json()}
    assert listed["tiny"]["baseline"] == {"asr_keyword": 0.04, "over_refusal": 0.1}
    assert "tiny" in ops("models", "list").stdout
    story = ops("audit", "show", "--target", "tiny", "--json").json()
    assert [(r["action"], r["actor"]) for r in story] == [
        ("model.register", "ops:tester"),
        ("model.onboard", "ops:tester"),
    ]
    assert story[0]["details"] == {"source": "/models/tiny"}
    assert story[1]["details"]["status"] == "ready"
    assert story[1]["details"]["result"] == {"probe_auroc": 0.97}

    def failing(model_id, actor):
        raise RuntimeError("out of memory")

    fake.onboard_base_model = failing
    failed = ops("models", "onboard", "tiny", ok=False)
    assert failed.exit_code == 1
    assert "out of memory" in failed.stderr
    last = ops("audit", "tail", "-n", "1", "--json").json()[0]
    assert (last["action"], last["target"], last["actor"]) == ("model.onboard_failed", "tiny", "ops:tester")
    assert "out of memory" in last["details"]["error"]
    ops("audit", "verify")
