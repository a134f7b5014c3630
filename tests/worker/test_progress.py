"""The train stage's progress writes (worker.pipeline.train.Progress) on Postgres, racing the
API's pause the way a running worker does."""

from __future__ import annotations

import threading

from core.db import session_scope
from core.jobs.transitions import transition
from core.jobs.vocab import JobStatus
from core.models import Job
from safety.train_metrics import StepMetrics
from tests.worker.conftest import create_job, demo_lines
from worker.pipeline.tracking import JobTracking
from worker.pipeline.train import Progress


def _step(step: int) -> StepMetrics:
    return StepMetrics(step, 4, 1, 1.0, 1.0, None, 0.1, 1.0, 0.0, None, None, 10, 1.0, 1e-4)


def test_a_pause_committed_during_a_step_leaves_no_finish_estimate(configured):
    """The step's write waits for the pause's row lock, then finds the job paused: it keeps the
    heartbeat going (the worker is still saving its checkpoint) and writes no estimate."""
    with session_scope() as session:
        job_id = create_job(session, "org-progress", demo_lines(4), status="running", stage="training")
        progress = Progress(session.get(Job, job_id), JobTracking(job_id, []))
    progress.on_step(_step(1))
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.estimated_finish is not None
        beat = job.heartbeat_at

    racer = threading.Thread(target=progress.on_step, args=(_step(2),))
    with session_scope() as session:  # the API's pause, as api.jobs.service moves the locked row
        assert transition(session, job_id, JobStatus.PAUSED, allowed_from=(JobStatus.RUNNING,), estimated_finish=None)
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive()  # blocked on the paused row
    racer.join(timeout=30)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.estimated_finish) == ("paused", None)
        assert job.heartbeat_at > beat
