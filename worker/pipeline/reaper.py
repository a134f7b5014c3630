"""The reaper (Celery beat, every ``GUARDTUNE_REAPER_INTERVAL_S``): no job is stranded.

For each unfinished job (``validating_files``, ``queued``, ``running``; any other status,
``paused`` say, is left alone) it tells four cases apart:

* **a lease holder that stopped heartbeating** (``worker_id`` set, heartbeat older than
  ``GUARDTUNE_STALE_JOB_AFTER_S``): the worker was lost. Counted against the stage
  (``Job.attempts``, reset when a stage hands over to the next); the stage is retried
  through a new outbox row (it resumes from its last checkpoint) until it has run
  ``GUARDTUNE_MAX_STAGE_ATTEMPTS`` times, then the job fails ``worker_lost``.
* **waiting in the queue** (no lease holder, the job's live outbox row sent and still in
  the broker): nothing to do, however long the wait. Never a worker loss.
* **message gone** (no lease holder, the live row never sent, or sent but no longer in
  the broker): the row is replayed with the same id (idempotent: a duplicate delivery is
  skipped by the worker). Not counted as an attempt, no customer-facing event. On Redis a
  message delivered to a worker more than ``GUARDTUNE_STALE_JOB_AFTER_S`` ago whose row is
  still unconsumed counts as gone too (the worker died between taking it and starting the
  stage; Redis would redeliver it only after ``GUARDTUNE_VISIBILITY_TIMEOUT_S``); a message
  waiting in a queue is never gone, however old (:func:`core.queue.broker_message_ids`).
* **a delayed retry due** (no lease holder, the live row unsent with ``not_before`` passed:
  a stage re-queued after a transient fault, :mod:`worker.pipeline.transient`): the row is
  sent. Before then the job is left waiting.
* **held for a GPU slot** (no lease holder, the live row a GPU stage's, unsent, with the
  fair-share dispatcher on: :mod:`core.dispatch`): left to the dispatcher, which the pass
  runs at its end (a lost worker's slot freed, a retry due) and which sends it in its
  organization's turn. Never a lost message.
* **nothing queued** (no lease holder, no live row, untouched for the stale period; e.g. a
  job created before the outbox existed): the stage the job's status points at is queued.

Replays wait ``send_grace_s`` after a row was written or sent, so a message on its way
to a worker is not replayed; a lost message is recovered within the stale timeout.

Finished jobs with webhook deliveries still pending (:mod:`worker.webhooks`) are looked
after the same way: their delivery task's row is sent when its retry is due, replayed when
its message is gone, and queued again when the task that consumed the last row died before
leaving the next one (no live row, the last one consumed over the stale timeout ago).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core import dispatch, outbox
from core.db import matched_rows, session_scope
from core.jobs.pipeline import DEFAULT_QUEUE, WEBHOOK_TASK, Stage
from core.jobs.vocab import LIVE, ErrorCode, JobStatus
from core.logging import get_logger
from core.models import Job, OutboxMessage, WebhookDelivery
from core.queue import broker_message_ids
from core.settings import Settings, get_settings
from core.webhooks.deliveries import DeliveryStatus, next_due
from worker.pipeline import jobstate

log = get_logger(__name__)


def send_grace_s(settings: Settings) -> float:
    return min(10.0, settings.stale_job_after_s / 2)


class _Broker:
    """The broker's message ids, read at most once per pass and only when needed; a message
    delivered longer than ``delivered_within_s`` ago and not acknowledged is not held."""

    def __init__(self, delivered_within_s: float) -> None:
        self._ids: set[str] | None = None
        self.unreadable = False
        self.delivered_within_s = delivered_within_s

    def holds(self, message_id: str) -> bool | None:
        if self._ids is None and not self.unreadable:
            try:
                self._ids = broker_message_ids(delivered_within_s=self.delivered_within_s)
            except Exception as exc:
                self.unreadable = True
                log.warning("reaper_broker_unreadable", error=f"{type(exc).__name__}: {exc}")
        return None if self._ids is None else message_id in self._ids


def reap() -> list[dict[str, Any]]:
    """One pass over the unfinished jobs; returns what it did, one dict per job touched:
    ``{"job_id", "action": "retried" | "failed" | "replayed" | "requeued" | "sent", "task"}``."""
    settings = get_settings()
    now = time.time()
    stale_before, grace_before = now - settings.stale_job_after_s, now - send_grace_s(settings)
    broker = _Broker(settings.stale_job_after_s)
    actions: list[dict[str, Any]] = []
    to_send: list[outbox.Pending] = []
    with session_scope() as session:
        for job in session.scalars(select(Job).where(Job.status.in_(LIVE))).all():
            row = outbox.latest(session, job.id)
            if job.worker_id is not None:
                if job.heartbeat_at is not None and job.heartbeat_at >= stale_before:
                    continue  # its worker is alive
                action, message = _worker_lost(session, job, row, stale_before, settings)
            elif row is None or row.consumed_at is not None:
                if not _untouched(session, job, row, stale_before):
                    continue  # claimed or handed over since we read it
                task, queue = _task_for(job)
                action, message = "requeued", outbox.add(session, job.id, task, queue)
            elif row.sent_at is None and dispatch.holds(row.queue):
                continue  # a GPU stage waiting for its organization's turn: the dispatcher sends it
            elif row.sent_at is None and row.not_before is not None:
                if row.not_before > now:
                    continue  # a retry waiting out its backoff
                action, message = "sent", outbox.pending(row)
            elif _message_gone(row, grace_before, broker):
                action, message = "replayed", outbox.pending(row)
            else:
                continue  # waiting in the queue
            if action:
                actions.append({"job_id": job.id, "action": action, "task": message.task if message else None})
                log.info(
                    "reaper_action",
                    job_id=job.id,
                    action=action,
                    task=message.task if message else None,
                    status=job.status,
                    stage=job.stage,
                )
            if message is not None and (action == "replayed" or not dispatch.holds(message.queue)):
                to_send.append(message)  # (a new GPU row waits for the dispatcher, below; a lost one is replayed)
        for job_id, action, message in _webhook_actions(session, now, stale_before, grace_before, broker):
            actions.append({"job_id": job_id, "action": action, "task": WEBHOOK_TASK})
            log.info("reaper_action", job_id=job_id, action=action, task=WEBHOOK_TASK)
            if action != "requeued":  # a requeued row waits for its not_before (the next pass sends it)
                to_send.append(message)
    for message in to_send:  # after the commit
        outbox.send_quietly(message)
    dispatch.release_quietly()  # held GPU stages into the slots freed meanwhile (lost workers, retries due)
    return actions


def _webhook_actions(
    session: Session, now: float, stale_before: float, grace_before: float, broker: _Broker
) -> list[tuple[str, str, outbox.Pending]]:
    """``(job id, action, row)`` for each job with webhook deliveries pending whose delivery
    task is due (``sent``), lost (``replayed``) or died without a next row (``requeued``)."""
    pending = select(WebhookDelivery.job_id).where(WebhookDelivery.status == DeliveryStatus.PENDING).distinct()
    found = []
    for job_id in session.scalars(pending).all():
        row = outbox.latest(session, job_id)
        if row is not None and row.consumed_at is not None and row.consumed_at >= stale_before:
            continue  # its task may still be posting
        if row is None or row.consumed_at is not None:
            requeued = outbox.add(session, job_id, WEBHOOK_TASK, DEFAULT_QUEUE, next_due(session, job_id))
            found.append((job_id, "requeued", requeued))
        elif row.sent_at is None and row.not_before is not None:
            if row.not_before <= now:
                found.append((job_id, "sent", outbox.pending(row)))
        elif _message_gone(row, grace_before, broker):
            found.append((job_id, "replayed", outbox.pending(row)))
    return found


def _untouched(session: Session, job: Job, row: OutboxMessage | None, stale_before: float) -> bool:
    """Re-check, in one conditional UPDATE that sees the latest commit: still no lease
    holder, nothing newer queued, no claim or hand-over for the stale period. (A worker
    consumes a row and takes the lease in one transaction, so a consumed row read above
    means its lease is visible here.)"""
    newer = select(OutboxMessage.seq).where(OutboxMessage.job_id == job.id)
    if row is not None:
        newer = newer.where(OutboxMessage.seq > row.seq)
    stale = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)
    claimed = matched_rows(
        session,
        update(Job)
        .where(Job.id == job.id, Job.worker_id.is_(None), ~newer.exists(), stale)
        .values(heartbeat_at=time.time())
        .execution_options(synchronize_session=False),
    )
    return claimed == 1


def _message_gone(row: OutboxMessage, grace_before: float, broker: _Broker) -> bool:
    if row.sent_at is None:
        return row.created_at < grace_before  # the sender died between commit and send
    return row.sent_at < grace_before and broker.holds(row.id) is False


def _task_for(job: Job) -> tuple[str, str]:
    """The stage a job with nothing queued should run next, from its status and stage."""
    stage: Stage | None
    if job.status == JobStatus.VALIDATING_FILES:
        stage = Stage.VALIDATE
    elif job.stage is None:
        stage = Stage.VALIDATE.next  # validated, not yet scanning
    else:
        stage = Stage.running_as(job.stage)
    assert stage is not None  # validate is not the last stage
    return stage.task, stage.queue


def _worker_lost(
    session: Session, job: Job, row: OutboxMessage | None, stale_before: float, settings: Settings
) -> tuple[str | None, outbox.Pending | None]:
    where, retry = job.stage or job.status, job.attempts + 1  # read before the UPDATE refreshes `job`
    if retry >= settings.max_stage_attempts:
        failed = jobstate.finish(
            session,
            job.id,
            JobStatus.FAILED,
            level="error",
            error={
                "code": ErrorCode.WORKER_LOST,
                "param": None,
                "message": f"The worker running stage '{where}' stopped responding "
                f"{settings.max_stage_attempts} times; the job was stopped.",
            },
            message="Job failed: its worker was lost",
            holder=job.worker_id,
        )
        return ("failed" if failed else None), None
    claimed = matched_rows(
        session,
        update(Job)
        .where(Job.id == job.id, Job.worker_id == job.worker_id, Job.heartbeat_at < stale_before)
        .values(attempts=retry, worker_id=None, heartbeat_at=time.time()),
    )
    if not claimed:
        return None, None
    jobstate.add_event(
        session,
        job.id,
        f"Worker lost during {where}; retrying the stage (retry {retry} of {settings.max_stage_attempts - 1})",
        level="warn",
    )
    task, queue = (row.task, row.queue) if row is not None else _task_for(job)
    return "retried", outbox.add(session, job.id, task, queue)
