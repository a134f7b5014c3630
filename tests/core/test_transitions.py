"""The one writer of a job's status (core.jobs.transitions), on Postgres: a conditional
UPDATE that never overwrites a finished job, writing its event and audit record with it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.ids import new_id
from core.jobs.transitions import add_event, transition, update_live
from core.jobs.vocab import JobStatus
from core.models import AuditRecord, File, Job, JobEvent, Organization


@pytest.fixture
def job_id(configured) -> str:
    org_id = new_id("org")
    with session_scope() as session:
        session.add(Organization(id=org_id, name=org_id))
        session.flush()
        file = File(id=new_id("file"), org_id=org_id, filename="t.jsonl", purpose="fine-tune", storage_key="k")
        session.add(file)
        session.flush()
        job = Job(id=new_id("ftjob"), org_id=org_id, model="m", training_file_id=file.id, status="running")
        session.add(job)
        session.flush()
        return job.id


def _counts(session, job_id: str) -> tuple[int, int]:
    events = session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id))
    audits = session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.target == job_id))
    return events, audits


def test_a_move_writes_status_columns_event_and_audit_and_bumps_the_version(job_id):
    with session_scope() as session:
        before = session.get(Job, job_id).version
    with session_scope() as session:
        moved = transition(
            session,
            job_id,
            JobStatus.FAILED,
            error={"code": "x"},
            finished_at=5,
            message="Job failed: x",
            level="error",
            event_data={"status": "failed"},
            actor="ops:me",
            action="job.failed",
            details={"why": "test"},
        )
        assert moved
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.error, job.finished_at) == ("failed", {"code": "x"}, 5)
        assert job.version == before + 1
        event = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).one()
        assert (event.message, event.level, event.data) == ("Job failed: x", "error", {"status": "failed"})
        record = session.scalars(select(AuditRecord).where(AuditRecord.target == job_id)).one()
        assert (record.actor, record.action, record.details["why"]) == ("ops:me", "job.failed", "test")


def test_a_finished_job_is_never_overwritten(job_id):
    with session_scope() as session:
        assert transition(session, job_id, JobStatus.CANCELLED, message="cancelled", action="job.cancel")
    with session_scope() as session:
        assert not transition(session, job_id, JobStatus.SUCCEEDED, message="released", action="job.succeeded")
        assert not transition(session, job_id, JobStatus.RUNNING, stage="training", message="m", action="job.stage")
        assert not update_live(session, job_id, heartbeat_at=1.0)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.stage, job.heartbeat_at) == ("cancelled", None, None)
        assert _counts(session, job_id) == (1, 1)  # only the cancel's


def test_allowed_from_names_the_statuses_a_move_may_leave(job_id):
    with session_scope() as session:
        assert not transition(session, job_id, JobStatus.QUEUED, allowed_from=(JobStatus.PAUSED,), message="m")
        assert transition(session, job_id, JobStatus.PAUSED, allowed_from=(JobStatus.RUNNING,))
        assert _counts(session, job_id) == (0, 0)  # nothing asked to be recorded
    with pytest.raises(ValueError, match="transition"):
        with session_scope() as session:
            update_live(session, job_id, status="queued")


def test_of_two_concurrent_moves_exactly_one_wins(job_id):
    """The second UPDATE waits for the first's row lock, then re-reads the status and matches
    nothing: no lost update, and only the winner's event and audit record."""
    results: dict[str, bool] = {}

    def release() -> None:
        with session_scope() as other:
            results["release"] = transition(other, job_id, JobStatus.SUCCEEDED, message="r", action="job.succeeded")

    racer = threading.Thread(target=release)
    with session_scope() as session:
        results["cancel"] = transition(session, job_id, JobStatus.CANCELLED, message="c", action="job.cancel")
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive()  # blocked on the row the first transaction moved
    racer.join(timeout=30)  # the cancel committed: the release re-reads the row and matches nothing
    assert results == {"cancel": True, "release": False}
    with session_scope() as check:
        assert check.get(Job, job_id).status == "cancelled"
        assert _counts(check, job_id) == (1, 1)


def test_a_jobs_events_are_written_one_transaction_at_a_time(job_id):
    """An event's seq follows commit order: a second writer waits for the first to commit, so a
    reader paging with ``after`` cannot see the later event without the earlier one."""

    def second() -> None:
        with session_scope() as other:
            add_event(other, job_id, "second")

    racer = threading.Thread(target=second)
    with session_scope() as session:
        add_event(session, job_id, "first")
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive()  # waiting for the first writer's commit
    racer.join(timeout=30)
    with session_scope() as check:
        rows = check.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq))
        assert list(rows) == ["first", "second"]
