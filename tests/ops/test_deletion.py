"""Deletion that deletes: a failed object deletion is retried, then recorded and swept; a
revoked model takes its job's stored objects and checkpoints with it; ``orgs delete
--purge`` leaves no row or object of the organization (the audit log stays). On SQLite with
the local folder and on Postgres with S3 (a versioned bucket with Object Lock, as compose
makes it: no old version may stay behind either)."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from core import deletion
from core.db import session_scope
from core.models import (
    ApiKey,
    Checkpoint,
    File,
    Job,
    JobEvent,
    Organization,
    PendingDeletion,
    ReleasedModel,
    SafetyReport,
    StageRun,
)
from core.releases import digests
from core.settings import get_settings
from core.storage import ObjectStore, S3Store, get_store
from tests.conftest import clear_caches
from tests.ops.factories import make_job


@pytest.fixture
def stored(backend, monkeypatch, request):
    """The backend; on Postgres its objects in the versioned bucket, retries without waiting."""
    if backend.name == "postgres":
        bucket = request.getfixturevalue("locked_bucket")
        monkeypatch.setenv("GUARDTUNE_STORAGE_URL", f"s3://{bucket}/{backend.url.rsplit('/', 1)[1]}-data")
    monkeypatch.setattr(deletion, "BACKOFF_S", 0.0)
    clear_caches()
    return backend


class FlakyStore:
    """The real store, whose next ``failures`` delete calls fail as an unreachable store's would."""

    def __init__(self, real: ObjectStore, failures: int):
        self.real, self.failures, self.calls = real, failures, 0

    def _call(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store unreachable")

    def delete(self, key: str) -> None:
        self._call()
        self.real.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        self._call()
        self.real.delete_prefix(prefix)


def _kept(prefix: str) -> list[str]:
    """Every key under ``prefix`` the store still holds in any form (S3: every version and
    delete marker, not only the listed objects)."""
    store = get_store()
    if not isinstance(store, S3Store):
        return store.list(prefix)
    listed = store.client.list_object_versions(Bucket=store.bucket, Prefix=store._key(prefix))
    found = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
    return sorted(v["Key"].removeprefix(store.prefix + "/") for v in found)


def _put(key: str, data: bytes = b"x") -> str:
    get_store().put_stream(key, io.BytesIO(data))
    return key


def _count(model, *where) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_transient_store_failure_is_retried(stored):
    key = _put("orgs/o/files/file-1")
    flaky = FlakyStore(get_store(), failures=deletion.ATTEMPTS - 1)
    with session_scope() as session:
        assert deletion.delete_or_defer(session, key, reason="file.delete file-1", store=flaky) is True
    assert flaky.calls == deletion.ATTEMPTS
    assert _kept("orgs/o/") == []
    assert _count(PendingDeletion) == 0


def test_a_lasting_failure_is_recorded_and_swept_later(stored, ops):
    key = _put("orgs/o/files/file-2")
    _put("orgs/o/files/file-2", b"a second version")
    with session_scope() as session:
        assert (
            deletion.delete_or_defer(session, key, reason="file.delete file-2", store=FlakyStore(get_store(), 9))
            is False
        )
    assert _kept("orgs/o/") == ([key, key] if stored.name == "postgres" else [key])  # S3: both versions
    [pending] = ops("storage", "pending", "--json").json()
    assert (pending["key"], pending["reason"], pending["attempts"]) == (key, "file.delete file-2", 1)
    assert pending["last_error"] == "ConnectionError: store unreachable"
    with session_scope() as session:
        result = deletion.sweep(session, FlakyStore(get_store(), 1))  # still down
    assert (result.deleted, result.failed) == (0, 1)
    assert ops("storage", "pending", "--json").json()[0]["attempts"] == 2
    assert ops("storage", "sweep", "--json").json() == {"deleted": 1, "failed": 0}
    assert _kept("orgs/o/") == []
    assert ops("storage", "pending", "--json").json() == []


def _org(ops, name: str) -> str:
    return ops("orgs", "create", name, "--json").json()["id"]


def _released(ops, org: str, adapter_dir) -> tuple[str, str, str]:
    """A released model of ``org`` whose job also stored a scan and a checkpoint (object and
    row) and whose adapter was placed for serving: ``(model id, job id, adapter sha256)``."""
    job = make_job(org, adapter=adapter_dir)
    model = ops("release", "approve", job, "--reason", "ok", "--json").json()
    _put(digests.job_dir(org, job) + "scan.jsonl")
    ckpt = _put(digests.job_dir(org, job) + "checkpoints/step-000020/adapter_model.safetensors")
    with session_scope() as session:
        session.add(Checkpoint(id=f"ftckpt-{job[-8:]}", job_id=job, step=20, storage_prefix=ckpt.rsplit("/", 1)[0]))
    placed = get_settings().vllm_adapters / model["sha256"]
    placed.mkdir(parents=True, exist_ok=True)
    (placed / "adapter_model.safetensors").write_bytes(b"weights")
    return model["id"], job, model["sha256"]


def test_revoking_a_model_deletes_its_jobs_objects_checkpoints_and_placed_copy(stored, ops, adapter_dir):
    org = _org(ops, "acme")
    model, job, sha = _released(ops, org, adapter_dir)
    other = _put(digests.job_dir(org, "ftjob-other") + "scan.jsonl")
    assert len(_kept(digests.job_dir(org, job))) >= 4  # adapter (2 files), scan, checkpoint
    out = ops("release", "revoke", model, "--reason", "leaked PII", "--json").json()
    assert out["status"] == "revoked"
    assert _kept(digests.job_dir(org, job)) == []
    assert _count(Checkpoint, Checkpoint.job_id == job) == 0
    assert not (get_settings().vllm_adapters / sha).exists()
    assert _kept(digests.job_dir(org, "ftjob-other")) == [other]
    assert ops("audit", "tail", "-n", "1", "--json").json()[0]["details"]["files"] == "deleted"


def test_revoke_keep_files_holds_them_for_an_investigation(stored, ops, adapter_dir):
    org = _org(ops, "acme")
    model, job, _ = _released(ops, org, adapter_dir)
    before = _kept(digests.job_dir(org, job))
    ops("release", "revoke", model, "--reason", "investigating", "--keep-files")
    assert _kept(digests.job_dir(org, job)) == before
    assert _count(Checkpoint, Checkpoint.job_id == job) == 1
    assert ops("audit", "tail", "-n", "1", "--json").json()[0]["details"]["files"] == "kept"


def _org_rows(org: str) -> dict[str, int]:
    jobs = select(Job.id).where(Job.org_id == org).scalar_subquery()
    return {
        "organizations": _count(Organization, Organization.id == org),
        "api_keys": _count(ApiKey, ApiKey.org_id == org),
        "files": _count(File, File.org_id == org),
        "jobs": _count(Job, Job.org_id == org),
        "job_events": _count(JobEvent, JobEvent.job_id.in_(jobs)),
        "safety_reports": _count(SafetyReport, SafetyReport.job_id.in_(jobs)),
        "checkpoints": _count(Checkpoint, Checkpoint.job_id.in_(jobs)),
        "stage_runs": _count(StageRun, StageRun.job_id.in_(jobs)),
        "released_models": _count(ReleasedModel, ReleasedModel.org_id == org),
    }


def test_orgs_delete_purge_removes_every_row_and_object_audited(stored, ops, adapter_dir):
    org, other = _org(ops, "acme"), _org(ops, "globex")
    ops("keys", "create", "--org", "acme")
    _, job, sha = _released(ops, org, adapter_dir)
    with session_scope() as session:  # a measured stage of the job (core.jobs.estimate)
        session.add(StageRun(job_id=job, stage="train", seconds=1.0, tokens=10, finished_at=0.0))
    upload = _put(f"orgs/{org}/files/file-upload", b'{"messages": []}')
    kept = _put(f"orgs/{other}/files/file-kept")
    ops("keys", "create", "--org", "globex")
    other_rows = _org_rows(other)
    refused = ops("orgs", "delete", "acme", ok=False)
    assert refused.exit_code == 1
    assert "--purge" in refused.stderr
    running = make_job(org, status="running", error=None)
    busy = ops("orgs", "delete", "acme", "--purge", ok=False)
    assert "1 unfinished job(s)" in busy.stderr
    with session_scope() as session:
        session.get(Job, running).status = "cancelled"
    assert len(_kept(f"orgs/{org}/")) >= 5  # upload, adapter (2 files), scan, checkpoint
    out = ops("orgs", "delete", "acme", "--purge", "--json").json()
    assert out["objects"] == "deleted"
    assert out["rows_deleted"]["jobs"] == 2
    assert set(_org_rows(org).values()) == {0}
    assert _kept(f"orgs/{org}/") == []
    assert upload not in _kept("orgs/")
    assert not (get_settings().vllm_adapters / sha).exists()
    assert _org_rows(other) == other_rows
    assert _kept(f"orgs/{other}/") == [kept]
    record = ops("audit", "tail", "-n", "1", "--json").json()[0]
    assert (record["action"], record["target"]) == ("org.purge", org)
    assert record["details"]["rows"] == out["rows_deleted"]
    assert ops("audit", "verify", "--json").json()["ok"] is True  # the log, org.create included, stays
    assert job in ops("audit", "show", "--target", job, "--json").stdout


def test_the_worker_sweeps_pending_deletions_on_its_beat(stored):
    from worker.celery_app import celery_app
    from worker.tasks import sweep_deletions

    celery_app.finalize()
    schedule = {entry["task"]: entry["schedule"] for entry in celery_app.conf.beat_schedule.values()}
    assert schedule["guardtune.sweep_deletions"] == get_settings().reaper_interval_s
    key = _put("orgs/o/files/file-3")
    with session_scope() as session:
        assert (
            deletion.delete_or_defer(session, key, reason="file.delete file-3", store=FlakyStore(get_store(), 9))
            is False
        )
    assert sweep_deletions() == {"deleted": 1, "failed": 0}
    assert _kept("orgs/o/") == []
    assert _count(PendingDeletion) == 0
