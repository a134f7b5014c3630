"""Celery tasks. Each takes a job id, runs one stage function (which opens its own
sessions) and hands the next stage of the pipeline (:data:`core.jobs.pipeline.PIPELINE`)
to the transactional outbox (:mod:`core.outbox`): written in the transaction that releases
the stage's lease, sent after its commit. A stage that ended the job (the gate blocking it,
the release) hands nothing over. A delivery whose outbox row was already consumed is a
duplicate and is skipped."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import structlog
from sqlalchemy import case
from sqlalchemy.orm import Session

from core import deletion, dispatch, outbox, retention
from core.audit import service as audit
from core.db import session_scope
from core.jobs import estimate
from core.jobs.pipeline import EXPIRE_TASK, PIPELINE, REAP_TASK, START_TASK, SWEEP_TASK, WEBHOOK_TASK, Stage
from core.jobs.transitions import update_live
from core.jobs.vocab import ErrorCode, JobStatus
from core.logging import get_logger
from core.models import Job
from core.settings import get_settings
from safety.interrupt import Interrupted
from worker.celery_app import celery_app
from worker.metrics import QUEUE_WAIT_SECONDS, STAGE_SECONDS, TRAIN_TOKENS_PER_SECOND, TRAINED_TOKENS
from worker.pipeline import evaluate, gate, jobstate, release, scan, train, transient, validate
from worker.pipeline.align import align_base_model
from worker.pipeline.jobstate import JobGone, Paused, StageError, Superseded
from worker.pipeline.onboard import onboard_base_model
from worker.pipeline.reaper import reap
from worker.pipeline.transient import transient_fault
from worker.webhooks import deliver

log = get_logger(__name__)

# Each stage's plain function (its order, task and queue: core.jobs.pipeline.PIPELINE); train's
# returns the tokens it trained (core.jobs.estimate), the others None.
STAGES: dict[Stage, Callable[[str], int | None]] = {
    Stage.VALIDATE: validate.run,
    Stage.SCAN: scan.run,
    Stage.TRAIN: train.run,
    Stage.EVALUATE: evaluate.run,
    Stage.GATE: gate.run,
    Stage.RELEASE: release.run,
}
assert set(STAGES) == {spec.stage for spec in PIPELINE}, "every stage of the pipeline has a function"


def run_stage(stage: Stage | str, job_id: str, message_id: str | None = None) -> Stage | None:
    """Run one stage under the job's lease; hand the next to the outbox. Returns the next
    stage queued (None: the job ended, or the stage did not run).

    ``message_id`` (the delivery's outbox row; None only when called in this process, not
    through the broker) is consumed in the transaction that takes the lease: a duplicate
    delivery runs nothing, and a message with no outbox row is refused and audited
    (``task.refused``): no pipeline producer sent it, and no operator command sends stage
    tasks. How long the message waited is observed (``guardtune_queue_wait_seconds``).
    The row's request id is bound in the log context while the stage runs (its logs,
    its audit records and the next stage's row carry it). A customer-facing failure
    (:class:`StageError`) or any unexpected error ends the job ``failed`` with a clear
    ``error`` (an unexpected error's message is generic and names the request id; the log
    keeps the exception); a transient fault (storage, disk, database:
    :mod:`worker.pipeline.transient`) releases the lease and re-queues the stage with backoff
    instead; a job that went terminal meanwhile is left alone."""
    stage = Stage(stage)
    with session_scope() as session:
        request_id = outbox.request_id(session, message_id) if message_id is not None else None
        delivery = outbox.consume(session, message_id) if message_id is not None else outbox.Delivery.FIRST
        if delivery == outbox.Delivery.UNKNOWN:
            _refuse(session, stage, job_id, message_id)
            return None
        if delivery == outbox.Delivery.DUPLICATE:
            log.info("stage_skipped", job_id=job_id, stage=stage, message_id=message_id, reason="duplicate delivery")
            return None
        waited = outbox.wait_of(session, message_id) if message_id is not None else None
        if not jobstate.claim(session, job_id):
            log.info("stage_skipped", job_id=job_id, stage=stage, reason="lease held or job terminal")
            return None
    if waited is not None:
        QUEUE_WAIT_SECONDS.labels(waited[0]).observe(waited[1])
    with structlog.contextvars.bound_contextvars(**({"request_id": request_id} if request_id else {})):
        return _run_claimed(stage, job_id)


def _refuse(session: Session, stage: Stage, job_id: str, message_id: str | None) -> None:
    """Audit and log a stage task that no pipeline producer sent (in ``session``'s transaction)."""
    log.warning("stage_refused", job_id=job_id, stage=stage, message_id=message_id, reason="no outbox row")
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="task.refused",
        target=job_id,
        details={"task": stage.task, "message_id": message_id, "reason": "no outbox row: not sent by the pipeline"},
    )


def _run_claimed(stage: Stage, job_id: str) -> Stage | None:
    """:func:`run_stage` after the lease is taken; a GPU stage's slot goes to the next
    organization's held stage when it ends, whatever its outcome (:mod:`core.dispatch`)."""
    try:
        return _run_and_hand_over(stage, job_id)
    finally:
        if dispatch.holds(stage.queue):
            dispatch.release_quietly()


def _run_and_hand_over(stage: Stage, job_id: str) -> Stage | None:
    """Run the claimed stage and hand the next stage over: the job's ``estimated_finish`` from
    this stage on (:func:`_estimate_finish`), the stage, its wall time observed by outcome
    (``guardtune_stage_seconds``) and, when it ran to its end, recorded (``stage_runs``). A
    stage that stopped because the job ended or was paused meanwhile (the scan and evaluation
    stop between batches once the job is cancelled: :class:`Interrupted`) just lets its lease go."""
    function = STAGES[stage]
    log.info("stage_started", job_id=job_id, stage=stage, worker=jobstate.worker_id())
    started = time.monotonic()
    _estimate_finish(job_id, stage)
    try:
        with jobstate.heartbeat(job_id):
            tokens = function(job_id)
    except (JobGone, Superseded, Paused, Interrupted) as exc:
        STAGE_SECONDS.labels(stage, "stopped").observe(time.monotonic() - started)
        log.info("stage_stopped", job_id=job_id, stage=stage, reason=type(exc).__name__)
        jobstate.release_lease(job_id)
        return None
    except StageError as exc:
        STAGE_SECONDS.labels(stage, "failed").observe(time.monotonic() - started)
        jobstate.fail(job_id, exc.code, exc.message, exc.param)
        return None
    except Exception as exc:
        outcome = "retry" if transient_fault(exc) is not None else "failed"
        STAGE_SECONDS.labels(stage, outcome).observe(time.monotonic() - started)
        _stage_raised(stage, job_id, exc)
        return None
    seconds = time.monotonic() - started
    message, next_stage = None, stage.next
    with session_scope() as session:
        estimate.record(session, job_id, stage, seconds, tokens)
        still_ours = jobstate.release_lease(job_id, session)  # (a job that just ended has no lease)
        if next_stage is not None and jobstate.ended(session, job_id):
            next_stage = None  # the stage ended the job (the gate blocked it, say)
        if next_stage is not None and not still_ours:
            log.warning("stage_lease_lost", job_id=job_id, stage=stage, reason="the reaper retried the stage meanwhile")
            return None
        if next_stage is not None:
            update_live(session, job_id, attempts=0, heartbeat_at=time.time())  # attempts count per stage
            message = outbox.add(session, job_id, next_stage.task, next_stage.queue)
    _observe_finished(stage, seconds, tokens)
    if message is not None:
        dispatch.send(message)
    log.info("stage_finished", job_id=job_id, stage=stage, next=next_stage, seconds=round(seconds, 3))
    return next_stage


def _estimate_finish(job_id: str, stage: Stage) -> None:
    """Set the job's ``estimated_finish`` as this stage starts: now plus the measured
    expectations of it and the stages after it (:func:`core.jobs.estimate.finish_after`;
    training refines it step by step). A paused job keeps none."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        stages = estimate.stages_from(stage)
        finish = estimate.finish_after(session, job, stages, get_settings().estimate_window)
        # (a bare NULL in the CASE would be typed text on Postgres: no CASE without a value)
        value = None if finish is None else case((Job.status == JobStatus.PAUSED, None), else_=finish)
        update_live(session, job_id, estimated_finish=value)


def _observe_finished(stage: Stage, seconds: float, tokens: int | None) -> None:
    STAGE_SECONDS.labels(stage, "finished").observe(seconds)
    if tokens:
        TRAINED_TOKENS.inc(tokens)
        TRAIN_TOKENS_PER_SECOND.set(tokens / max(seconds, 1e-9))


def _stage_raised(stage: Stage, job_id: str, exc: Exception) -> None:
    """An unexpected exception ended the stage: a transient fault re-queues it, anything else
    fails the job with a generic message naming the request id (the log has the traceback)."""
    fault = transient_fault(exc)
    if fault is not None:
        log.warning("stage_interrupted", job_id=job_id, stage=stage, fault=fault, exc_info=exc)
        _retry_later(job_id, stage, fault)
        return
    log.error("stage_failed", job_id=job_id, stage=stage, exc_info=exc)
    message = f"Stage '{stage}' failed with an internal error. Quote {transient.reference(job_id)} to support."
    jobstate.fail(job_id, ErrorCode.INTERNAL_ERROR, message)


def _retry_later(job_id: str, stage: Stage, fault: str) -> None:
    """:func:`transient.retry_later`; if that cannot reach the database either, the lease goes
    stale and the reaper retries the stage (counted as a worker loss)."""
    try:
        outcome = transient.retry_later(job_id, stage, fault)
    except Exception as exc:
        log.warning("stage_retry_deferred", job_id=job_id, stage=stage, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return
    log.info("stage_retry", job_id=job_id, stage=stage, fault=fault, outcome=outcome)


def _register(stage: Stage) -> None:
    @celery_app.task(name=stage.task, bind=True)
    def _stage_task(self, job_id: str) -> str | None:
        return run_stage(stage, job_id, self.request.id)


for _stage in STAGES:
    _register(_stage)


@celery_app.task(name=START_TASK, bind=True)
def start(self, job_id: str) -> str | None:
    """The API's entry point (its outbox row written with the job)."""
    return run_stage(PIPELINE[0].stage, job_id, self.request.id)


@celery_app.task(name=WEBHOOK_TASK, bind=True)
def deliver_webhooks(self, job_id: str) -> int:
    """A finished job's webhook deliveries (:mod:`worker.webhooks`; its outbox row written
    with the job's terminal move)."""
    return deliver(job_id, self.request.id)


@celery_app.task(name="guardtune.gpu.onboard")
def onboard(model_id: str) -> dict:
    return onboard_base_model(model_id)


@celery_app.task(name="guardtune.gpu.align")
def align(model_id: str, onboard: bool = True) -> dict:
    """Align ``model_id`` into ``<model_id>-aligned`` (cached) and, with ``onboard``, onboard it."""
    return align_base_model(model_id, onboard=onboard)


@celery_app.task(name=REAP_TASK)
def reap_stale_jobs() -> list:
    return reap()


@celery_app.task(name=SWEEP_TASK)
def sweep_deletions() -> dict:
    """Retry the stored objects whose deletion failed (:func:`core.deletion.sweep`)."""
    with session_scope() as session:
        result = deletion.sweep(session)
    return {"deleted": result.deleted, "failed": result.failed}


@celery_app.task(name=EXPIRE_TASK)
def sweep_expired() -> dict:
    """Delete the files whose ``expires_after`` ran out and end the uploads past their hour
    (:func:`core.retention.sweep_expired`)."""
    with session_scope() as session:
        result = retention.sweep_expired(session)
    return {"files": result.files, "uploads": result.uploads}


@celery_app.on_after_finalize.connect
def _schedule_reaper(sender, **_) -> None:
    """Every ``GUARDTUNE_REAPER_INTERVAL_S`` on the reaper's own queue; a pass not started
    within one interval expires (is discarded), so passes never pile up behind a busy worker."""
    from core.settings import get_settings

    interval = get_settings().reaper_interval_s
    sender.add_periodic_task(interval, reap_stale_jobs.s(), name="reap stale jobs", expires=interval)
    sender.add_periodic_task(interval, sweep_deletions.s(), name="sweep pending deletions", expires=interval)
    sender.add_periodic_task(interval, sweep_expired.s(), name="sweep expired files and uploads", expires=interval)


@celery_app.task(name="guardtune.ping")
def ping(payload: dict) -> dict:
    """A round trip through broker, worker and result backend (health and tests)."""
    return {"echo": payload, "worker": f"{socket.gethostname()}:{os.getpid()}"}
