"""The pipeline's side of a job's state: entering a stage, ending the job, the stage lease
and its heartbeat.

Status changes go through :func:`core.jobs.transitions.transition` (a conditional UPDATE
that never touches a finished job), so a cancel (set by the API) or a failure is never
overwritten by a worker that is still finishing a step.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.db import matched_rows, session_scope
from core.jobs.transitions import add_event as add_event  # re-exported: the stages' events
from core.jobs.transitions import transition
from core.jobs.vocab import ACTIVE, LIVE, TERMINAL, ErrorCode, JobStage, JobStatus
from core.logging import get_logger
from core.models import Job, now
from core.settings import get_settings
from safety import interrupt

log = get_logger(__name__)


@functools.cache
def _worker_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"


def worker_id() -> str:
    """This process's id as a stage's lease holder. Per process, not per import: Celery's
    prefork pool imports the tasks in its parent, and children sharing the parent's id would
    each take the others' leases as their own."""
    return _worker_id(os.getpid())


class StageError(Exception):
    """A stage's failure the customer should see: the job ends ``failed`` with this code."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class JobGone(Exception):
    """The job reached a terminal status (cancelled, say) while a stage was running."""


class Superseded(Exception):
    """The job is already past this stage (a redelivered or duplicate task)."""


class Paused(Exception):
    """The customer paused the job: the stage stopped (training after checkpointing)."""


def live_job(session: Session, job_id: str) -> Job:
    """The job, re-read; :class:`JobGone` if it is terminal."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status in TERMINAL:
        raise JobGone(job_id)
    return job


def ended(session: Session, job_id: str) -> bool:
    """Whether the job is in a terminal status (or gone)."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status is None or status in TERMINAL


def enter_stage(session: Session, job_id: str, stage: JobStage, message: str) -> None:
    """Mark the job running in ``stage`` with an event and an audit record (a resumed job,
    ``queued`` in its stage, just becomes ``running``); :class:`Paused` if it is paused."""
    job = live_job(session, job_id)
    order: list[str] = list(JobStage)
    if job.stage and order.index(job.stage) > order.index(stage):
        raise Superseded(f"{job_id} is already {job.stage}")
    values: dict[str, Any] = {"stage": stage}
    if job.started_at is None:
        values["started_at"] = now()
    entering = job.stage != stage  # read first: the UPDATE below refreshes ``job``
    if entering or job.status != JobStatus.RUNNING:
        # A resumed job (``queued`` in its stage) just becomes ``running``: nothing to record.
        record: dict[str, Any] = (
            {"message": message, "event_data": {"stage": stage}, "action": "job.stage", "details": {"stage": stage}}
            if entering
            else {}
        )
        if not transition(session, job_id, JobStatus.RUNNING, allowed_from=LIVE, **record, **values):
            now_status = session.scalar(select(Job.status).where(Job.id == job_id))
            raise Paused(job_id) if now_status == JobStatus.PAUSED else JobGone(job_id)


def finish(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    error: dict[str, Any] | None = None,
    message: str,
    level: str = "info",
    holder: str | None = None,
    **values: Any,
) -> bool:
    """End the job in a terminal ``status`` if it is not terminal already and its stage lease
    is held by ``holder`` (default: this worker). A worker whose lease was taken over (the
    reaper declared it lost and another worker claimed the stage) writes nothing: False."""
    return transition(
        session,
        job_id,
        status,
        message=message,
        level=level,
        event_data={"status": status},
        action=f"job.{status}",
        details={"error": error} if error else {},
        where=(Job.worker_id == (holder or worker_id()),),
        stage=None,
        error=error,
        finished_at=now(),
        worker_id=None,
        estimated_finish=None,
        **values,
    )


def fail(job_id: str, code: ErrorCode, message: str, param: str | None = None) -> bool:
    """End the job ``failed`` with this error, if this worker still holds its lease
    (:func:`finish`); False (logged) if it does not or the job already ended."""
    with session_scope() as session:
        failed = finish(
            session,
            job_id,
            JobStatus.FAILED,
            error={"code": code, "message": message, "param": param},
            message=f"Job failed: {message}",
            level="error",
        )
    if not failed:
        log.warning("job_fail_skipped", job_id=job_id, code=code, reason="lease taken over or job already ended")
    return failed


def claim(session: Session, job_id: str) -> bool:
    """Take the job's stage lease: free, already ours, or its holder's heartbeat is stale.

    Exactly one worker wins a contested claim (one conditional UPDATE)."""
    stale_before = time.time() - get_settings().stale_job_after_s
    claimed = matched_rows(
        session,
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(ACTIVE),
            or_(Job.worker_id.is_(None), Job.worker_id == worker_id(), Job.heartbeat_at < stale_before),
        )
        .values(worker_id=worker_id(), heartbeat_at=time.time()),
    )
    return claimed == 1


def release_lease(job_id: str, session: Session | None = None) -> bool:
    """Give up this worker's lease (in ``session``'s transaction if given); False if it
    was not ours any more (the reaper declared us lost and retried the stage)."""
    if session is None:
        with session_scope() as own:
            return release_lease(job_id, own)
    released = matched_rows(
        session, update(Job).where(Job.id == job_id, Job.worker_id == worker_id()).values(worker_id=None)
    )
    return released == 1


def beat(job_id: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.worker_id == worker_id()).values(heartbeat_at=time.time())
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
        return session.scalar(select(Job.status).where(Job.id == job_id)) == JobStatus.PAUSED


def cancel_requested(job_id: str) -> bool:
    """True once the customer cancelled (or the job otherwise ended)."""
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one()
    return row.cancel_requested or row.status in TERMINAL


def stops_when_cancelled(stage: Callable[[str], None]) -> Callable[[str], None]:
    """A stage function that stops between two batches of its model passes within seconds of
    the job's cancel (:mod:`safety.interrupt`: raises :class:`~safety.interrupt.Interrupted`),
    instead of running to its end on a job that no longer counts against its organization."""

    @functools.wraps(stage)
    def run(job_id: str) -> None:
        with interrupt.stop_when(lambda: cancel_requested(job_id)):
            stage(job_id)

    return run
