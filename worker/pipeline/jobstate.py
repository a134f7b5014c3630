"""Job state moves: status and stage, events, the stage lease and its heartbeat.

Every status change is a conditional UPDATE that never touches a job already in a
terminal status, so a cancel (set by the API) or a failure is never overwritten by
a worker that is still finishing a step.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core import audit
from core.db import session_scope
from core.ids import new_id
from core.logging import get_logger
from core.models import Job, JobEvent, now
from core.settings import get_settings

log = get_logger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
PAUSED = "paused"  # not terminal: resume re-queues the job's stage
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StageError(Exception):
    """A stage's failure the customer should see: the job ends ``failed`` with this code."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class JobGone(Exception):
    """The job reached a terminal status (cancelled, say) while a stage was running."""


class Superseded(Exception):
    """The job is already past this stage (a redelivered or duplicate task)."""


class Paused(Exception):
    """The customer paused the job: the stage stopped (training after checkpointing)."""


STAGE_ORDER = ("scanning", "training", "evaluating", "gating")


def add_event(
    session: Session, job_id: str, message: str, *, level: str = "info", type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    session.add(JobEvent(id=new_id("ftevent"), job_id=job_id, level=level, type=type, message=message, data=data))


def live_job(session: Session, job_id: str) -> Job:
    """The job, re-read; :class:`JobGone` if it is terminal."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status in TERMINAL:
        raise JobGone(job_id)
    return job


def move(session: Session, job_id: str, **values: Any) -> bool:
    """Set columns on a non-terminal job; False if the job is terminal (nothing changed)."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.not_in(TERMINAL)).values(**values)
    )
    return result.rowcount == 1


def enter_stage(session: Session, job_id: str, stage: str, message: str) -> None:
    """Mark the job running in ``stage`` with an event and an audit record (a resumed job,
    ``queued`` in its stage, just becomes ``running``); :class:`Paused` if it is paused."""
    job = live_job(session, job_id)
    if job.stage and STAGE_ORDER.index(job.stage) > STAGE_ORDER.index(stage):
        raise Superseded(f"{job_id} is already {job.stage}")
    values: dict[str, Any] = {"status": "running", "stage": stage}
    if job.started_at is None:
        values["started_at"] = now()
    entering = job.stage != stage  # read first: the UPDATE below refreshes ``job``
    if entering or job.status != "running":
        started = session.execute(
            update(Job).where(Job.id == job_id, Job.status.not_in((*TERMINAL, PAUSED))).values(**values)
        )
        if started.rowcount != 1:
            now_status = session.scalar(select(Job.status).where(Job.id == job_id))
            raise Paused(job_id) if now_status == PAUSED else JobGone(job_id)
    if entering:
        add_event(session, job_id, message, data={"stage": stage})
        audit.record(session, actor=audit.SYSTEM, action="job.stage", target=job_id, details={"stage": stage})


def finish(session: Session, job_id: str, status: str, *, error: dict[str, Any] | None = None,
           message: str, level: str = "info", **values: Any) -> bool:  # fmt: skip
    """End the job in a terminal ``status`` (if it is not terminal already)."""
    changed = move(session, job_id, status=status, stage=None, error=error, finished_at=now(),
                   worker_id=None, estimated_finish=None, **values)  # fmt: skip
    if changed:
        add_event(session, job_id, message, level=level, data={"status": status})
        audit.record(session, actor=audit.SYSTEM, action=f"job.{status}", target=job_id,
                     details={"error": error} if error else {})  # fmt: skip
    return changed


def fail(job_id: str, code: str, message: str, param: str | None = None) -> None:
    with session_scope() as session:
        finish(session, job_id, "failed", error={"code": code, "message": message, "param": param},
               message=f"Job failed: {message}", level="error")  # fmt: skip


def claim(session: Session, job_id: str) -> bool:
    """Take the job's stage lease: free, already ours, or its holder's heartbeat is stale.

    Exactly one worker wins a contested claim (one conditional UPDATE)."""
    stale_before = time.time() - get_settings().stale_job_after_s
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.not_in(TERMINAL),
            or_(Job.worker_id.is_(None), Job.worker_id == WORKER_ID, Job.heartbeat_at < stale_before),
        )
        .values(worker_id=WORKER_ID, heartbeat_at=time.time())
    )
    return result.rowcount == 1


def release_lease(job_id: str, session: Session | None = None) -> bool:
    """Give up this worker's lease (in ``session``'s transaction if given); False if it
    was not ours any more (the reaper declared us lost and retried the stage)."""
    if session is None:
        with session_scope() as own:
            return release_lease(job_id, own)
    result = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == WORKER_ID).values(worker_id=None))
    return result.rowcount == 1


def beat(job_id: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.worker_id == WORKER_ID).values(heartbeat_at=time.time())
        )


def _beat_quietly(job_id: str) -> None:
    """A heartbeat that survives a database restart (the next one reconnects)."""
    try:
        beat(job_id)
    except Exception as exc:
        log.warning("heartbeat_failed", job_id=job_id, error=f"{type(exc).__name__}: {str(exc)[:200]}")


@contextmanager
def heartbeat(job_id: str) -> Iterator[None]:
    """Refresh the lease's heartbeat from a thread while the body runs (model loads,
    generation), so the reaper can tell a slow stage from a dead worker."""
    stop = threading.Event()
    interval = get_settings().heartbeat_interval_s

    def run() -> None:
        while not stop.wait(interval):
            _beat_quietly(job_id)

    thread = threading.Thread(target=run, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pause_requested(job_id: str) -> bool:
    """True while the customer has the job paused."""
    with session_scope() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) == PAUSED


def cancel_requested(job_id: str) -> bool:
    """True once the customer cancelled (or the job otherwise ended)."""
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one()
    return row.cancel_requested or row.status in TERMINAL
