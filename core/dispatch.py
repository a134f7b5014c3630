"""The fair-share dispatcher of GPU stages: no organization holds every GPU worker while
another's job waits.

Without it, every GPU stage's outbox row would go to the broker as soon as it is written, and
the ``gpu`` queue is first in, first out: an organization's queued jobs take the workers in
turn, each stage behind the others'. Instead (with ``GUARDTUNE_GPU_SLOTS`` > 0) a GPU row is
*held* (written, not sent) and :func:`release` sends held rows while fewer than
``GUARDTUNE_GPU_SLOTS`` GPU stages are *in flight*, one at a time, each time to the
organization that is owed the GPU most, each count divided by the organization's *weight*
(``organizations.gpu_weight``, set by ``guardtune-ops orgs gpu-weight``; 1 when unset):

1. the fewest GPU stages in flight per unit of weight, then
2. the fewest GPU seconds per unit of weight over the last ``GUARDTUNE_GPU_SHARE_WINDOW_S`` (a
   stage's seconds run from its row's dispatch to the job's next row, the job's end, or its
   last heartbeat if paused; a stage still in flight counts until now), then
3. its oldest job first (then the oldest row).

So with organization A holding 4 queued jobs and one slot, organization B's new job takes the
slot as soon as A's running stage ends, ahead of A's next job and of that job's next stage; and
an organization of weight 2 holds up to twice the slots, and twice the GPU seconds, of one of
weight 1 that also waits.

A job's row is *in flight* from its dispatch until the job has a newer row (its next stage, a
retry), ends or is paused; *held* while it is the job's live row, unsent, due (``not_before``
passed) and the job is live. :func:`release` runs whenever a slot may have freed or a row
become held: after a GPU stage (``worker.tasks``), when a GPU row is written
(:func:`send`: a resumed job, a retry) and on every reaper pass (a lost worker's slot, a retry
that became due). Releases are serialized (a Postgres advisory lock; SQLite's write lock), so
two of them never fill one slot twice. A dispatched row is handed to the broker under the lock
and marked sent in the same transaction (so ``sent_at`` is seen once the broker has it, as
:func:`core.outbox.send` writes it); a row the broker refuses stays held for the next release.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from core import outbox
from core.db import begin_write, session_scope
from core.jobs.pipeline import GPU_QUEUE
from core.jobs.vocab import ACTIVE, LIVE, TERMINAL, JobStatus
from core.logging import get_logger
from core.models import Job, Organization, OutboxMessage
from core.settings import get_settings

log = get_logger(__name__)

LOCK_KEY = 0x67745F6770755F71  # pg_advisory_xact_lock key of the dispatcher ("gt_gpu_q")


def holds(queue: str) -> bool:
    """Whether rows of ``queue`` go through the dispatcher (GPU rows, with slots configured)."""
    return queue == GPU_QUEUE and get_settings().gpu_slots > 0


def send(message: outbox.Pending) -> None:
    """Hand a committed row to the broker: a held queue's row through :func:`release` (it goes
    when its organization's turn comes), any other straight away (:func:`core.outbox.send_quietly`)."""
    if holds(message.queue):
        release_quietly()
    else:
        outbox.send_quietly(message)


@dataclass(frozen=True)
class Share:
    """An organization's use of the GPU workers: stages in flight, seconds in the window."""

    in_flight: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Row:
    """One outbox row with what the dispatcher needs of its job."""

    job_id: str
    seq: int
    queue: str
    created_at: float
    sent_at: float | None
    org_id: str
    status: str
    finished_at: float | None
    heartbeat_at: float | None


def shares(session: Session, now: float, window_s: float) -> dict[str, Share]:
    """Each organization's :class:`Share` at ``now`` (organizations without GPU use: absent)."""
    since = now - window_s
    query = (
        select(
            OutboxMessage.job_id,
            OutboxMessage.seq,
            OutboxMessage.queue,
            OutboxMessage.created_at,
            OutboxMessage.sent_at,
            Job.org_id,
            Job.status,
            Job.finished_at,
            Job.heartbeat_at,
        )
        .join(Job, Job.id == OutboxMessage.job_id)
        .where(or_(Job.status.in_(ACTIVE), Job.finished_at >= since))
        .order_by(OutboxMessage.job_id, OutboxMessage.seq)
    )
    by_job: dict[str, list[_Row]] = defaultdict(list)
    for values in session.execute(query).all():
        by_job[values.job_id].append(_Row(*values))
    in_flight: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for rows in by_job.values():
        for row, after in zip(rows, [*rows[1:], None], strict=True):
            if row.queue != GPU_QUEUE or row.sent_at is None:
                continue
            if after is None and row.status in LIVE:
                in_flight[row.org_id] += 1
            end = after.created_at if after is not None else _stopped_at(row, now)
            seconds[row.org_id] += max(0.0, min(end, now) - max(row.sent_at, since))
    return {org: Share(in_flight[org], seconds[org]) for org in {*in_flight, *seconds}}


def _stopped_at(row: _Row, now: float) -> float:
    """When the job's last row's stage stopped using the GPU (``now``: it still does)."""
    if row.status in TERMINAL and row.finished_at is not None:
        return float(row.finished_at)
    if row.status == JobStatus.PAUSED and row.heartbeat_at is not None:
        return row.heartbeat_at  # its worker's last heartbeat, before it let the paused job go
    return now


def held(session: Session, now: float) -> Sequence[tuple[OutboxMessage, str, int]]:
    """The held rows (live, unsent, due GPU rows of live jobs) with their job's organization
    and ``seq``."""
    query = (
        select(OutboxMessage, Job.org_id, Job.seq)
        .join(Job, Job.id == OutboxMessage.job_id)
        .where(
            OutboxMessage.queue == GPU_QUEUE,
            OutboxMessage.consumed_at.is_(None),  # only a job's newest row can be unconsumed
            OutboxMessage.sent_at.is_(None),
            or_(OutboxMessage.not_before.is_(None), OutboxMessage.not_before <= now),
            Job.status.in_(LIVE),
        )
    )
    return [(row, org_id, job_seq) for row, org_id, job_seq in session.execute(query).tuples().all()]


def weights(session: Session, org_ids: set[str]) -> dict[str, int]:
    """The weight of each of ``org_ids`` in the fair share (``gpu_weight``; 1 when unset)."""
    query = select(Organization.id, Organization.gpu_weight).where(Organization.id.in_(sorted(org_ids)))
    found = {org_id: weight for org_id, weight in session.execute(query).tuples().all() if weight is not None}
    return {org_id: found.get(org_id, 1) for org_id in org_ids}


def choose(
    waiting: Sequence[tuple[OutboxMessage, str, int]], share_of: dict[str, Share], weight_of: dict[str, int], free: int
) -> list[OutboxMessage]:
    """Up to ``free`` of the ``waiting`` rows, in the order they get a slot: each time the row
    of the organization owed the GPU most for its weight (``weight_of``, module docstring),
    counting the rows chosen before it as in flight."""
    share_of = dict(share_of)

    def owed(item: tuple[OutboxMessage, str, int]) -> tuple[float, float, int, int]:
        row, org_id, job_seq = item
        share, weight = share_of.get(org_id, Share()), weight_of[org_id]
        return share.in_flight / weight, share.seconds / weight, job_seq, row.seq

    left = list(waiting)
    chosen: list[OutboxMessage] = []
    while left and len(chosen) < free:
        best = min(left, key=owed)
        left.remove(best)
        row, org_id, _ = best
        share = share_of.get(org_id, Share())
        share_of[org_id] = Share(share.in_flight + 1, share.seconds)
        chosen.append(row)
    return chosen


def _lock(session: Session) -> None:
    """Serialize releases: Postgres' transaction-scoped advisory lock, SQLite's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    else:
        begin_write(session)


def release() -> list[outbox.Pending]:
    """Dispatch held rows into the free slots (module docstring); returns the rows sent, in
    order. Does nothing without slots configured."""
    settings = get_settings()
    if settings.gpu_slots <= 0:
        return []
    now = time.time()
    with session_scope() as session:
        _lock(session)
        share_of = shares(session, now, settings.gpu_share_window_s)
        free = settings.gpu_slots - sum(share.in_flight for share in share_of.values())
        waiting = held(session, now) if free > 0 else []
        weight_of = weights(session, {org_id for _, org_id, _ in waiting})
        chosen = choose(waiting, share_of, weight_of, free)
        messages = [message for message in map(outbox.pending, chosen) if _sent(session, message)]
    return messages


def _sent(session: Session, message: outbox.Pending) -> bool:
    """Hand the row to the broker, then mark it sent in ``session`` (seen at the commit, once
    the broker has it); False (logged) if the broker refused: the row stays held."""
    try:
        outbox.send(message, session)
    except Exception as exc:
        log.warning("gpu_dispatch_send_failed", job_id=message.job_id, error=f"{type(exc).__name__}: {exc}")
        return False
    log.info("gpu_stage_dispatched", job_id=message.job_id, task=message.task, message_id=message.id)
    return True


def release_quietly() -> None:
    """:func:`release`, logging instead of raising (the next release or reaper pass retries)."""
    try:
        release()
    except Exception as exc:
        log.warning("gpu_dispatch_failed", error=f"{type(exc).__name__}: {exc}")
