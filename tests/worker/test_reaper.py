"""The reaper against the embedded stack's real database and broker, in this process:
it replays outbox rows never sent or lost by the broker (same id, idempotently), leaves a
stage that waits in the queue alone however old its heartbeat, and counts worker losses
per stage, failing the job ``worker_lost`` exactly when the attempts run out."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from tests.conftest import apply_env
from tests.worker.conftest import create_job, demo_lines

STALE_S = 4.0


@pytest.fixture
def stack(embedded_env, monkeypatch):
    from migrations import migrate

    apply_env(
        monkeypatch, {**embedded_env, "GUARDTUNE_STALE_JOB_AFTER_S": str(STALE_S), "GUARDTUNE_MAX_STAGE_ATTEMPTS": "3"}
    )
    migrate.upgrade()


def _job(**fields) -> str:
    from core.db import session_scope

    with session_scope() as session:
        return create_job(session, "org-r", demo_lines(4), **fields)


def _age(model, key, **columns) -> None:
    """Move timestamps into the past, as if time had passed."""
    from core.db import session_scope

    with session_scope() as session:
        session.execute(update(model).where(model.id == key).values(**columns))


def _events(job_id: str) -> list[str]:
    from core.db import session_scope
    from core.models import JobEvent

    with session_scope() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def _row(message_id: str):
    from core.db import session_scope
    from core.models import OutboxMessage

    with session_scope() as session:
        return session.scalar(select(OutboxMessage).where(OutboxMessage.id == message_id))


def _latest(job_id: str):
    from core import outbox
    from core.db import session_scope

    with session_scope() as session:
        return outbox.latest(session, job_id)


def _purge_broker() -> None:
    from core.queue import DEFAULT_QUEUE, GPU_QUEUE, producer

    with producer().connection_for_write() as conn:
        for queue in (DEFAULT_QUEUE, GPU_QUEUE):
            conn.default_channel.queue_purge(queue)


def test_unsent_row_is_replayed_once_and_a_lost_message_again(stack):
    from core import outbox
    from core.db import session_scope
    from core.models import OutboxMessage
    from core.queue import broker_message_ids
    from worker.pipeline.reaper import reap

    job_id = _job()
    with session_scope() as session:  # the API committed the job and its row, then died before sending
        message = outbox.add(session, job_id, "guardtune.pipeline.start", "default")
    assert reap() == []  # within the send grace: the sender may still be on it
    _age(OutboxMessage, message.id, created_at=time.time() - STALE_S)
    assert reap() == [{"job_id": job_id, "action": "replayed", "task": "guardtune.pipeline.start"}]
    row = _row(message.id)
    assert row.sent_at is not None
    assert row.sends == 1
    assert row.consumed_at is None
    assert message.id in broker_message_ids()
    _age(OutboxMessage, message.id, sent_at=time.time() - 100 * STALE_S)
    assert reap() == []  # sent and still in the broker: waiting, however long

    _purge_broker()  # the broker lost it (Redis restarted empty, say)
    assert message.id not in broker_message_ids()
    assert reap() == [{"job_id": job_id, "action": "replayed", "task": "guardtune.pipeline.start"}]
    assert _row(message.id).sends == 2
    assert message.id in broker_message_ids()
    assert not [m for m in _events(job_id) if "lost" in m.lower()]


def test_a_stage_waiting_in_the_queue_is_not_a_lost_worker(stack):
    from core import outbox
    from core.db import session_scope
    from core.models import Job, OutboxMessage
    from worker.pipeline.reaper import reap

    old = time.time() - 50 * STALE_S
    job_id = _job(status="running", stage="scanning", heartbeat_at=old, worker_id=None, attempts=0)
    with session_scope() as session:
        message = outbox.add(session, job_id, "guardtune.pipeline.train", "gpu")
    outbox.send(message)
    _age(OutboxMessage, message.id, created_at=old, sent_at=old)
    for _ in range(3):
        assert reap() == []
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempts, job.worker_id) == ("running", 0, None)
    assert _row(message.id).sends == 1
    assert not [m for m in _events(job_id) if "lost" in m.lower()]


def test_worker_losses_count_per_stage_and_fail_exactly_when_attempts_run_out(stack):
    from core import outbox
    from core.db import session_scope
    from core.models import Job
    from worker.pipeline.reaper import reap
    from worker.tasks import run_stage

    job_id = _job(status="running", stage="training", attempts=0)
    with session_scope() as session:
        first = outbox.add(session, job_id, "guardtune.pipeline.train", "gpu")
        outbox.consume(session, first.id)

    def worker_dies() -> None:
        _age(Job, job_id, worker_id="dead-worker", heartbeat_at=time.time() - 2 * STALE_S)

    worker_dies()
    assert [a["action"] for a in reap()] == ["retried"]
    retry = _latest(job_id)
    assert retry.task == "guardtune.pipeline.train"
    assert retry.id != first.id
    assert reap() == []  # the retry waits in the queue: not a second loss
    worker_dies()
    assert [a["action"] for a in reap()] == ["retried"]
    worker_dies()
    assert [a["action"] for a in reap()] == ["failed"]
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error["code"] == "worker_lost"
        assert "stopped responding 3 times" in job.error["message"]
    warnings = [m for m in _events(job_id) if m.startswith("Worker lost")]
    assert warnings == [
        "Worker lost during training; retrying the stage (retry 1 of 2)",
        "Worker lost during training; retrying the stage (retry 2 of 2)",
    ]
    assert reap() == []  # a failed job is left alone
    assert run_stage("train", job_id, retry.id) is None  # a late delivery of a retry runs nothing


def test_duplicate_delivery_runs_once_and_handover_resets_attempts(stack):
    from core import outbox
    from core.db import session_scope
    from core.models import Job
    from worker.tasks import run_stage

    job_id = _job(attempts=2)  # two losses during validation so far
    with session_scope() as session:
        message = outbox.add(session, job_id, "guardtune.pipeline.start", "default")
    assert run_stage("validate", job_id, message.id) == "scan"
    assert run_stage("validate", job_id, message.id) is None  # the broker redelivered it
    assert _events(job_id).count("Validated training file; job queued") == 1
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "queued"  # scan starts with a fresh count
        assert job.attempts == 0
    nxt = _latest(job_id)
    assert nxt.task == "guardtune.pipeline.scan"
    assert nxt.queue == "gpu"
    assert _row(message.id).consumed_at is not None
    assert _row(nxt.id).sent_at is not None


def test_a_job_with_nothing_queued_is_requeued_after_the_stale_period(stack):
    """A job no outbox row speaks for (created before the outbox existed, say) and no
    worker holds: the stage its status points at is queued, once."""
    from core.models import Job
    from worker.pipeline.reaper import reap

    job_id = _job(status="queued", heartbeat_at=time.time())
    assert reap() == []  # touched recently: give the pipeline its stale period
    _age(Job, job_id, heartbeat_at=time.time() - 2 * STALE_S)
    assert reap() == [{"job_id": job_id, "action": "requeued", "task": "guardtune.pipeline.scan"}]
    row = _latest(job_id)
    assert row.queue == "gpu"
    assert row.sent_at is not None
    assert row.sends == 1
    assert reap() == []  # now it waits in the queue


def test_the_request_id_that_started_a_job_follows_it_through_the_worker(stack):
    """The create request's ``x-request-id`` is kept with the outbox row, bound while the
    worker runs the stage (audit records name it), inherited by the next stage's row and by
    a row written outside any request (a reaper retry), and unbound afterwards."""
    import structlog

    from core import outbox
    from core.db import session_scope
    from core.models import AuditRecord
    from worker.tasks import run_stage

    jobs = [_job(), _job()]
    with session_scope() as session:  # a file that is not JSONL: its validation fails
        bad = create_job(session, "org-r", b"not json\n")
    messages = {}
    for job_id, request_id in [(jobs[0], "req-create-1"), (jobs[1], "req-create-2"), (bad, "req-bad")]:
        with structlog.contextvars.bound_contextvars(request_id=request_id), session_scope() as session:
            messages[job_id] = outbox.add(session, job_id, "guardtune.pipeline.start", "default")
    assert _row(messages[jobs[0]].id).request_id == "req-create-1"

    assert run_stage("validate", jobs[0], messages[jobs[0]].id) == "scan"  # outside any request
    assert "request_id" not in structlog.contextvars.get_contextvars()
    assert _latest(jobs[0]).request_id == "req-create-1"
    with session_scope() as session:  # the reaper retrying the scan: no request bound
        retry = outbox.add(session, jobs[0], "guardtune.pipeline.scan", "gpu")
    assert _row(retry.id).request_id == "req-create-1"
    assert _latest(jobs[1]).request_id == "req-create-2"  # another job's row is its own

    assert run_stage("validate", bad, messages[bad].id) is None
    with session_scope() as session:
        failed = session.scalar(
            select(AuditRecord).where(AuditRecord.target == bad, AuditRecord.action == "job.failed")
        )
    assert failed.details["request_id"] == "req-bad"
