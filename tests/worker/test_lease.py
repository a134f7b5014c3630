"""A stage's lease holder is one process: a forked pool process (Celery's prefork children,
which inherit the tasks imported by their parent) gets an id of its own."""

from __future__ import annotations

import multiprocessing

from worker.pipeline import jobstate


def _send_id(conn) -> None:
    conn.send(jobstate.worker_id())
    conn.close()


def test_a_forked_process_holds_leases_under_its_own_id():
    parent_id = jobstate.worker_id()
    assert jobstate.worker_id() == parent_id  # stable within a process
    ctx = multiprocessing.get_context("fork")
    ids = []
    for _ in range(2):
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_send_id, args=(send,))
        child.start()
        ids.append(receive.recv())
        child.join(timeout=30)
        assert child.exitcode == 0
    assert len({parent_id, *ids}) == 3


def _claim_in_child(job_id: str, conn) -> None:
    from tests.conftest import clear_caches

    clear_caches()  # this process's own engine, not the parent's connections
    from core.db import session_scope

    with session_scope() as session:
        conn.send(jobstate.claim(session, job_id))
    conn.close()


def test_a_worker_whose_lease_was_taken_over_cannot_fail_the_job(pipeline_env, monkeypatch):
    """Worker A's heartbeat went stale; worker B (another process) claimed the stage. A, still
    finishing, cannot fail the job; B, the holder, can."""
    from sqlalchemy import update

    from core.db import session_scope
    from core.models import Job
    from tests.worker.conftest import create_job, demo_lines

    monkeypatch.setenv("GUARDTUNE_STALE_JOB_AFTER_S", "5")
    with session_scope() as session:
        job_id = create_job(session, "org-lease", demo_lines(4), status="running", stage="training")
        assert jobstate.claim(session, job_id)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=0))  # A stopped heartbeating
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    other = ctx.Process(target=_claim_in_child, args=(job_id, send))
    other.start()
    took_over = receive.recv()
    other.join(timeout=60)
    assert took_over is True
    assert jobstate.fail(job_id, "internal_error", "stage failed in the old worker") is False
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "running"
        assert job.error is None
        assert job.worker_id not in (None, jobstate.worker_id())
        session.execute(update(Job).where(Job.id == job_id).values(worker_id=jobstate.worker_id()))
    assert jobstate.fail(job_id, "internal_error", "stage failed in the holder") is True
