"""Transient faults in a stage: which errors are, and re-queuing the stage after one.

A stage that hits object storage it cannot reach (a botocore connection or HTTP error, an S3
5xx), a full disk (``ENOSPC``, ``EDQUOT``) or a lost database connection (SQLAlchemy's
``OperationalError`` / ``InterfaceError``) has not failed: :func:`retry_later` releases the
lease and queues the stage again after a backoff (``GUARDTUNE_RETRY_BACKOFF_S``, doubling per
retry). Retries count in ``Job.attempts`` as the reaper's worker losses do, so one stage runs
at most ``GUARDTUNE_MAX_STAGE_ATTEMPTS`` times; then the job fails ``service_unavailable``
with a generic message naming the request id (the log keeps the exception).

The delayed task is an outbox row with ``not_before`` set and left unsent: the reaper sends
it once it is due (:mod:`worker.pipeline.reaper`), so the delay survives a worker restart and
holds no message in a worker's memory.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator

import structlog
from sqlalchemy import update

from core import outbox
from core.db import matched_rows, session_scope
from core.jobs.pipeline import Stage
from core.jobs.vocab import ErrorCode, JobStatus
from core.logging import get_logger
from core.models import Job
from core.settings import get_settings
from worker.pipeline import jobstate

log = get_logger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def transient_fault(exc: BaseException) -> str | None:
    """What ``exc`` (or an exception in its chain) says was unavailable: ``"storage"``,
    ``"disk"`` or ``"database"``; None when it is not a transient fault."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError
    from sqlalchemy.exc import InterfaceError, OperationalError

    for error in _chain(exc):
        if isinstance(error, ConnectionError | HTTPClientError):
            return "storage"
        if (
            isinstance(error, ClientError)
            and error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
        ):
            return "storage"
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return "disk"
        if isinstance(error, OperationalError | InterfaceError):
            return "database"
    return None


def reference(job_id: str) -> str:
    """What a customer quotes to support about this failure: the request id bound while the
    stage runs (the API request the job stems from), else the job id."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return f"request id {request_id}" if request_id else f"job {job_id}"


def backoff_s(retry: int) -> float:
    """The delay before retry ``retry`` (1-based): ``GUARDTUNE_RETRY_BACKOFF_S`` doubling."""
    return float(get_settings().retry_backoff_s * 2 ** (retry - 1))


def retry_later(job_id: str, stage: Stage, fault: str) -> str | None:
    """After a transient ``fault`` in ``stage``: release this worker's lease and queue the stage
    again after :func:`backoff_s`, or fail the job once the stage has run
    ``GUARDTUNE_MAX_STAGE_ATTEMPTS`` times. Returns ``"retried"``, ``"failed"``, or None when the
    lease was not ours any more (the reaper retried the stage meanwhile) or the job ended."""
    settings = get_settings()
    with session_scope() as session:
        job = session.get(Job, job_id, populate_existing=True)
        if job is None or job.worker_id != jobstate.worker_id():
            return None
        retry = job.attempts + 1
        if retry >= settings.max_stage_attempts:
            message = (
                f"Stage '{stage}' could not complete: a service it depends on was unavailable "
                f"{settings.max_stage_attempts} times. Quote {reference(job_id)} to support."
            )
            failed = jobstate.finish(
                session,
                job_id,
                JobStatus.FAILED,
                level="error",
                error={"code": ErrorCode.SERVICE_UNAVAILABLE, "param": None, "message": message},
                message=f"Job failed: {message}",
            )
            return "failed" if failed else None
        delay = backoff_s(retry)
        released = matched_rows(
            session,
            update(Job)
            .where(Job.id == job_id, Job.worker_id == jobstate.worker_id())
            .values(attempts=retry, worker_id=None, heartbeat_at=time.time()),
        )
        if not released:
            return None
        jobstate.add_event(
            session,
            job_id,
            f"Stage '{stage}' was interrupted ({fault} unavailable); retrying in {delay:g} s "
            f"(retry {retry} of {settings.max_stage_attempts - 1})",
            level="warn",
        )
        outbox.add(session, job_id, stage.task, stage.queue, not_before=time.time() + delay)
    return "retried"
