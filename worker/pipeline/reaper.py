"""The stale-job reaper: a running job whose worker stopped heartbeating gets its
stage re-enqueued (it resumes from the last checkpoint), up to
``GUARDTUNE_MAX_STAGE_ATTEMPTS``; after that it ends ``failed`` — never stuck in
``running``."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from core.db import session_scope
from core.models import Job
from core.settings import get_settings
from worker.pipeline import jobstate

STAGE_TASKS = {"scanning": "scan", "training": "train", "evaluating": "evaluate", "gating": "gate"}


def reap() -> list[tuple[str, str]]:
    """Handle every stale job once; returns ``(job id, "retried" | "failed")`` pairs.

    The caller enqueues the retried stages (after this commit)."""
    settings = get_settings()
    stale_before = time.time() - settings.stale_job_after_s
    actions: list[tuple[str, str]] = []
    with session_scope() as session:
        stale = session.scalars(
            select(Job).where(Job.status == "running", Job.heartbeat_at < stale_before)
        ).all()
        for job in stale:
            if job.attempts + 1 >= settings.max_stage_attempts:
                jobstate.finish(session, job.id, "failed", level="error",
                                error={"code": "worker_lost", "param": None,
                                       "message": f"The worker running stage '{job.stage}' stopped responding "
                                                  f"{settings.max_stage_attempts} times; the job was stopped."},
                                message="Job failed: its worker was lost")  # fmt: skip
                actions.append((job.id, "failed"))
                continue
            claimed = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.attempts == job.attempts, Job.heartbeat_at < stale_before)
                .values(attempts=job.attempts + 1, worker_id=None, heartbeat_at=time.time())
            ).rowcount
            if claimed:
                jobstate.add_event(session, job.id, f"Worker lost during {job.stage}; retrying the stage "
                                   f"(retry {job.attempts + 1} of {settings.max_stage_attempts - 1})", level="warn")  # fmt: skip
                actions.append((job.id, STAGE_TASKS[job.stage]))
    return actions
