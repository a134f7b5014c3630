"""Only the gate releases: the release stage releases the adapter the gate approved (by its
digest) and refuses anything else, and a stage task that no pipeline producer sent (no outbox
row) is refused, also when it reaches a real worker through the real Redis broker."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from tests.conftest import apply_env, start_worker, stop_process
from tests.worker.conftest import create_job, demo_lines, store_adapter
from tests.worker.jobs import wait_for


def job_at_release(org_id: str, gate: dict | None) -> str:
    """A job whose gate stage just finished (gate decision ``gate``, None: none), its adapter stored."""
    from core.db import session_scope
    from core.models import SafetyReport

    with session_scope() as session:
        job_id = create_job(session, org_id, demo_lines(4), status="running", stage="gating")
        session.add(SafetyReport(job_id=job_id, gate=gate))
    return job_id


def audit_actions(job_id: str) -> list[str]:
    from core.db import session_scope
    from core.models import AuditRecord

    with session_scope() as session:
        return list(session.scalars(select(AuditRecord.action).where(AuditRecord.target == job_id)))


def released_rows(job_id: str) -> list:
    from core.db import session_scope
    from core.models import ReleasedModel

    with session_scope() as session:
        return list(session.scalars(select(ReleasedModel.id).where(ReleasedModel.job_id == job_id)))


def job_row(job_id: str):
    from core.db import session_scope
    from core.models import Job

    with session_scope() as session:
        return session.get(Job, job_id)


def test_release_stage_releases_the_adapter_the_gate_approved(pipeline_env):
    from worker.tasks import run_stage

    job_id = job_at_release("org-gated", None)
    digest = store_adapter("org-gated", job_id)
    _set_gate(job_id, {"released": True, "reasons": ["ok"], "adapter_sha256": digest})
    assert run_stage("release", job_id) is None
    job = job_row(job_id)
    assert job.status == "succeeded"
    assert released_rows(job_id) == [job.fine_tuned_model]


@pytest.mark.parametrize(
    ("gate", "reason"),
    [
        (None, "the safety gate has not decided on this job"),
        ({"released": False, "reasons": ["ASR too high"]}, "the safety gate did not approve this adapter"),
        ({"released": True, "reasons": ["ok"]}, "the stored adapter is not the one the safety gate approved"),
    ],
    ids=["no-decision", "blocked", "no-digest"],
)
def test_release_stage_refuses_without_the_gates_approval(pipeline_env, gate, reason):
    from worker.tasks import run_stage

    job_id = job_at_release("org-ungated", gate)
    store_adapter("org-ungated", job_id)
    assert run_stage("release", job_id) is None
    job = job_row(job_id)
    assert job.status == "failed"
    assert job.error["code"] == "release_refused"
    assert job.error["message"] == f"The release was refused: {reason}."
    assert job.fine_tuned_model is None
    assert released_rows(job_id) == []
    assert "release.refused" in audit_actions(job_id)


def test_release_stage_refuses_an_adapter_swapped_after_the_gate(pipeline_env):
    from worker.tasks import run_stage

    job_id = job_at_release("org-swap", None)
    digest = store_adapter("org-swap", job_id)
    _set_gate(job_id, {"released": True, "reasons": ["ok"], "adapter_sha256": digest})
    store_adapter("org-swap", job_id, weights=b"\1" * 64)  # replaced between gate and release
    assert run_stage("release", job_id) is None
    job = job_row(job_id)
    assert (
        job.error["message"] == "The release was refused: the stored adapter is not the one the safety gate approved."
    )
    assert released_rows(job_id) == []


def test_gate_records_the_digest_of_the_adapter_it_judged(pipeline_env):
    """The whole pipeline in this process: the gate's decision names the stored adapter's
    digest, and the release registers that digest."""
    from core.db import session_scope
    from core.models import ReleasedModel, SafetyReport
    from core.releases.digests import adapter_prefix, adapter_sha256
    from core.storage import get_store
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(session, "org-digest", demo_lines(8))
    stage = "validate"
    while stage is not None:
        stage = run_stage(stage, job_id)
    digest = adapter_sha256(get_store(), adapter_prefix("org-digest", job_id))
    with session_scope() as session:
        assert session.get(SafetyReport, job_id).gate["adapter_sha256"] == digest
        [released] = session.scalars(select(ReleasedModel).where(ReleasedModel.job_id == job_id)).all()
        assert released.sha256 == digest


def test_ops_approval_refuses_an_adapter_swapped_after_the_gate(pipeline_env):
    from core.db import session_scope
    from core.errors import Conflict
    from core.releases.service import approve_blocked_job
    from worker.tasks import run_stage

    job_id = job_at_release("org-approve", None)
    digest = store_adapter("org-approve", job_id)
    _set_gate(job_id, {"released": False, "reasons": ["ASR too high"], "adapter_sha256": digest})
    from worker.pipeline import jobstate

    with session_scope() as session:  # as the gate leaves a blocked job
        assert jobstate.claim(session, job_id)
        assert jobstate.finish(
            session,
            job_id,
            "failed",
            error={"code": "safety_gate_blocked", "param": None, "message": "blocked"},
            message="blocked",
        )
    store_adapter("org-approve", job_id, weights=b"\2" * 64)
    with pytest.raises(Conflict) as refused, session_scope() as session:
        approve_blocked_job(session, job_id, actor="ops:tester", reason="looked fine")
    assert refused.value.code == "adapter_changed"
    assert released_rows(job_id) == []
    assert run_stage("release", job_id) is None  # the job is terminal: nothing runs


def _set_gate(job_id: str, gate: dict) -> None:
    from core.db import session_scope
    from core.models import SafetyReport

    with session_scope() as session:
        session.get_one(SafetyReport, job_id).gate = gate


def test_forged_release_task_through_redis_releases_nothing(stack_env, monkeypatch, tmp_path):
    """A release task sent straight to the real Redis broker (no outbox row), for a job whose
    gate never ran, reaches a real worker, which refuses it: no release, the job untouched,
    the refusal audited."""
    from core import registry
    from core.db import session_scope
    from core.jobs.pipeline import Stage
    from core.queue import enqueue
    from core.settings import get_settings

    apply_env(monkeypatch, stack_env)
    with session_scope() as session:
        registry.seed_base_models(session, get_settings())
    org_id = f"org-forged-{time.monotonic_ns()}"
    job_id = job_at_release(org_id, None)
    store_adapter(org_id, job_id)
    worker = start_worker(stack_env, tmp_path / "worker.log", beat=False)
    try:
        forged = enqueue(Stage.RELEASE.task, job_id, queue=Stage.RELEASE.queue, ignore_result=True, task_id="forged-1")
        wait_for(lambda: "task.refused" in audit_actions(job_id), 120, "the worker to refuse the forged task")
    finally:
        stop_process(worker)
    assert forged == "forged-1"
    assert released_rows(job_id) == []
    job = job_row(job_id)
    assert job.status == "running"
    assert job.fine_tuned_model is None
    assert job.worker_id is None  # the lease was never taken
    assert "stage_refused" in (tmp_path / "worker.log").read_text()
