"""The transactional outbox of pipeline tasks: no job is stranded by a lost message.

A task is never sent straight from a request or a stage. Instead:

1. :func:`add` writes an :class:`~core.models.OutboxMessage` row in the same transaction
   as the job or stage change that makes the task due (so both commit or neither);
2. after the commit, :func:`send` hands it to the broker (the row's id is the broker
   message id) and marks it sent;
3. the worker that runs it first :func:`consume`\\ s the row: exactly one delivery of a row
   runs, any duplicate (a replay, a broker redelivery) is skipped, and a task whose id has
   no row (forged, or sent by hand to the broker) is refused;
4. the row keeps the id of the API request the task stems from (``x-request-id``: the
   request bound in the writer's log context, else the job's previous row's), and the worker
   binds it while the task runs, so its log lines and audit records name that request;
5. the reaper (``worker/pipeline/reaper.py``) replays a job's live row that was never sent
   (the process died between commit and send) or whose message the broker no longer holds
   (the broker lost it, or on Redis a worker took it longer than the stale timeout ago and
   died before consuming the row), with the same id, so replays are idempotent: of the
   replay and a late redelivery of the original, whichever consumes the row first runs.

A writer deep inside another's transaction (a job's terminal move queues its webhooks, see
:mod:`core.webhooks.events`) cannot send after a commit it does not make: it hands the row to
:func:`send_after_commit`, which sends it when that session commits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import structlog
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from core.db import matched_rows
from core.ids import new_id
from core.logging import get_logger
from core.models import OutboxMessage
from core.queue import enqueue

log = get_logger(__name__)


@dataclass(frozen=True)
class Pending:
    """What :func:`send` needs, readable after the session that wrote the row closed."""

    id: str
    job_id: str
    task: str
    queue: str


def pending(row: OutboxMessage) -> Pending:
    return Pending(row.id, row.job_id, row.task, row.queue)


def add(session: Session, job_id: str, task: str, queue: str, not_before: float | None = None) -> Pending:
    """Write the job's next task in ``session``'s transaction; older unconsumed rows of the
    job are superseded (marked consumed), so a job has at most one live row. The row's
    ``request_id`` is the one bound in the log context, else the job's previous row's.
    ``not_before`` (a retry's backoff): the caller does not send the row; the reaper sends
    it (through :mod:`core.dispatch`, a GPU row) once that time has passed."""
    stamp = time.time()
    request_id = structlog.contextvars.get_contextvars().get("request_id") or session.scalar(
        select(OutboxMessage.request_id)
        .where(OutboxMessage.job_id == job_id)
        .order_by(OutboxMessage.seq.desc())
        .limit(1)
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.job_id == job_id, OutboxMessage.consumed_at.is_(None))
        .values(consumed_at=stamp)
    )
    row = OutboxMessage(
        id=new_id("msg"),
        job_id=job_id,
        task=task,
        queue=queue,
        created_at=stamp,
        sends=0,
        request_id=request_id,
        not_before=not_before,
    )
    session.add(row)
    session.flush()
    return pending(row)


def send(message: Pending, session: Session | None = None) -> None:
    """Send one row's task (after its commit) and then mark it sent, in ``session``'s
    transaction if given (:mod:`core.dispatch`, under its lock), else in its own. Raises if
    the broker refuses; the row then stays unsent and the reaper replays it."""
    from core.db import session_scope

    enqueue(message.task, message.job_id, queue=message.queue, ignore_result=True, task_id=message.id)
    if session is None:
        with session_scope() as own:
            _mark_sent(own, message)
        return
    _mark_sent(session, message)


def _mark_sent(session: Session, message: Pending) -> None:
    """Mark the row sent (once more) in ``session``'s transaction."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id)
        .values(sent_at=time.time(), sends=OutboxMessage.sends + 1)
    )


def send_quietly(message: Pending) -> bool:
    """:func:`send`, logging instead of raising (the reaper replays what failed)."""
    try:
        send(message)
    except Exception as exc:
        log.warning(
            "outbox_send_failed",
            message_id=message.id,
            job_id=message.job_id,
            task=message.task,
            error=f"{type(exc).__name__}: {exc}",
        )
        return False
    return True


_AFTER_COMMIT = "outbox_send_after_commit"


def send_after_commit(session: Session, message: Pending) -> None:
    """Send ``message`` (:func:`send_quietly`) once ``session``'s transaction commits; if it
    rolls back, the row is gone with it and nothing is sent."""
    session.info.setdefault(_AFTER_COMMIT, []).append(message)


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    for message in session.info.pop(_AFTER_COMMIT, []):
        send_quietly(message)


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


class Delivery(StrEnum):
    """What :func:`consume` found for a delivered message id."""

    FIRST = "first"  # the row's first delivery: run it
    DUPLICATE = "duplicate"  # consumed (or superseded) before: skip it
    UNKNOWN = "unknown"  # no row: nobody in the pipeline sent it (forged, or sent by hand): refuse it


def consume(session: Session, message_id: str) -> Delivery:
    """Mark the row consumed in ``session``'s transaction and say which delivery this is.
    Only :attr:`Delivery.FIRST` may run: every pipeline task is written here before it is
    sent, so a message id with no row was not sent by the pipeline (the API, a stage, the
    reaper) and its task is refused."""
    changed = matched_rows(
        session,
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.consumed_at.is_(None))
        .values(consumed_at=time.time()),
    )
    if changed:
        return Delivery.FIRST
    known = session.scalar(select(OutboxMessage.id).where(OutboxMessage.id == message_id)) is not None
    return Delivery.DUPLICATE if known else Delivery.UNKNOWN


def request_id(session: Session, message_id: str) -> str | None:
    """The request id stored with a row (``None``: none recorded, or no such row)."""
    return session.scalar(select(OutboxMessage.request_id).where(OutboxMessage.id == message_id))


def latest(session: Session, job_id: str) -> OutboxMessage | None:
    """The job's newest row (its live one unless consumed)."""
    return session.scalar(
        select(OutboxMessage).where(OutboxMessage.job_id == job_id).order_by(OutboxMessage.seq.desc()).limit(1)
    )


def wait_of(session: Session, message_id: str) -> tuple[str, float] | None:
    """A consumed row's queue and how long it waited: from when it was due (its
    ``not_before``, else its creation) to its consumption; ``None`` if not consumed."""
    row = session.execute(
        select(
            OutboxMessage.queue, OutboxMessage.created_at, OutboxMessage.not_before, OutboxMessage.consumed_at
        ).where(OutboxMessage.id == message_id)
    ).first()
    if row is None or row.consumed_at is None:
        return None
    return row.queue, max(0.0, row.consumed_at - max(row.created_at, row.not_before or 0.0))


@dataclass(frozen=True)
class QueueBacklog:
    """A queue's unconsumed rows that are due (a delayed retry counts from its ``not_before``),
    and when the oldest of them became due (``None``: none waiting)."""

    waiting: int
    oldest_due: float | None


def backlog(session: Session, queues: tuple[str, ...], at: float) -> dict[str, QueueBacklog]:
    """Each of ``queues``' backlog as of ``at``."""
    due = func.coalesce(OutboxMessage.not_before, OutboxMessage.created_at)
    rows = session.execute(
        select(OutboxMessage.queue, func.count(), func.min(due))
        .where(OutboxMessage.consumed_at.is_(None), due <= at)
        .group_by(OutboxMessage.queue)
    ).all()
    found = {queue: QueueBacklog(count, oldest) for queue, count, oldest in rows}
    return {queue: found.get(queue, QueueBacklog(0, None)) for queue in queues}
