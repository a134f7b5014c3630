"""The one writer of a job's status.

:func:`transition` moves a job to a new status with one conditional ``UPDATE … WHERE id = ?
AND status IN (allowed)``: of two concurrent writers, the one whose UPDATE comes second finds
the status changed and writes nothing. By default only an unfinished job moves, so a cancel
(the API), a failure (a stage, the reaper) or a release is never overwritten by a worker still
finishing a step. In the same transaction it writes the job event and the audit record of the
move (when the caller gives them), and, when the move ends the job, its webhook deliveries
(:func:`core.webhooks.events.job_ended`: sent after the commit). Every UPDATE bumps
``Job.version`` (the ETag of a conditional poll).

:func:`update_live` sets other columns (heartbeat, estimate, stage lease) of an unfinished job
under the same condition; it never changes the status.

:func:`add_event` writes a job's events in commit order (it locks the job's row first).

The caller commits.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.db import matched_rows
from core.ids import new_id
from core.jobs.vocab import ACTIVE, TERMINAL, JobStatus
from core.models import Job, JobEvent
from core.webhooks.events import job_ended


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    """One event on the job's ``/events`` (in the caller's transaction).

    First it locks the job's row (``FOR NO KEY UPDATE``, as any UPDATE of the job does; a
    no-op on SQLite, whose writers are serial), so a job's events are written one transaction
    at a time: their ``seq`` follows commit order, and a reader paging with ``after`` never
    passes an event that a slower transaction commits later."""
    session.execute(select(Job.id).where(Job.id == job_id).with_for_update(key_share=True))
    session.add(JobEvent(id=new_id("ftevent"), job_id=job_id, level=level, type=type, message=message, data=data))


def _expire_loaded(session: Session, job_id: str) -> None:
    """Make a ``Job`` this session already holds reload on next access. Sessions here do not
    expire on commit, and the in-place sync of the UPDATE left such a job's ``error`` stale (the
    API's create answered ``failed`` with no error when the broker refused the job)."""
    loaded = session.identity_map.get(session.identity_key(Job, job_id))
    if loaded is not None:
        session.expire(loaded)


def transition(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    allowed_from: Collection[JobStatus] = ACTIVE,
    message: str | None = None,
    level: str = "info",
    event_data: dict[str, Any] | None = None,
    actor: str = audit.SYSTEM,
    action: str | None = None,
    details: dict[str, Any] | None = None,
    where: Collection[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Set the job's ``status`` (and ``values``, other columns) if its status is one of
    ``allowed_from`` (default: any unfinished one) and every condition of ``where`` holds (a
    stage's lease, say); then add the event ``message`` (with ``level`` and ``event_data``) and
    the audit record ``action`` by ``actor`` with ``details``, each only when given; a
    terminal ``status`` queues the job's webhook event. Returns False, having written nothing,
    when the job is not (any longer) in ``allowed_from`` or a condition does not hold."""
    matched = matched_rows(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status.in_(tuple(allowed_from)), *where)
        .values(status=status, **values),
    )
    if matched != 1:
        return False
    _expire_loaded(session, job_id)
    if message is not None:
        add_event(session, job_id, message, level=level, data=event_data)
    if action is not None:
        audit.record(session, actor=actor, action=action, target=job_id, details=details or {})
    if status in TERMINAL:
        job_ended(session, job_id)
    return True


def update_live(session: Session, job_id: str, **values: Any) -> bool:
    """Set columns (not the status) of an unfinished job; False if it is finished."""
    if "status" in values:
        raise ValueError("change a job's status with transition()")
    return matched_rows(session, update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(**values)) == 1
