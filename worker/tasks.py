"""Celery tasks. Each takes a job id, runs one stage function (which opens its own
sessions) and, after that stage's commit, enqueues the next stage."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from core.db import session_scope
from core.logging import get_logger
from core.queue import DEFAULT_QUEUE, GPU_QUEUE, enqueue
from worker.celery_app import celery_app
from worker.pipeline import evaluate, gate, jobstate, release, scan, train, validate
from worker.pipeline.jobstate import JobGone, StageError, Superseded
from worker.pipeline.align import align_base_model
from worker.pipeline.onboard import onboard_base_model
from worker.pipeline.reaper import reap

log = get_logger(__name__)

# stage name -> (plain function, queue): model work on the GPU queue, light work on default.
STAGES: dict[str, tuple[Callable[[str], str | None], str]] = {
    "validate": (validate.run, DEFAULT_QUEUE),
    "scan": (scan.run, GPU_QUEUE),
    "train": (train.run, GPU_QUEUE),
    "evaluate": (evaluate.run, GPU_QUEUE),
    "gate": (gate.run, DEFAULT_QUEUE),
    "release": (release.run, DEFAULT_QUEUE),
}


def task_name(stage: str) -> str:
    return f"guardtune.pipeline.{stage}"


def enqueue_stage(stage: str, job_id: str) -> None:
    enqueue(task_name(stage), job_id, queue=STAGES[stage][1])


def run_stage(stage: str, job_id: str) -> str | None:
    """Run one stage under the job's lease; enqueue the next. Returns the next stage.

    A customer-facing failure (:class:`StageError`) or any unexpected error ends the job
    ``failed`` with a clear ``error``; a job that went terminal meanwhile is left alone."""
    function, _ = STAGES[stage]
    with session_scope() as session:
        if not jobstate.claim(session, job_id):
            log.info("stage_skipped", job_id=job_id, stage=stage, reason="lease held or job terminal")
            return None
    log.info("stage_started", job_id=job_id, stage=stage, worker=jobstate.WORKER_ID)
    try:
        with jobstate.heartbeat(job_id):
            next_stage = function(job_id)
    except (JobGone, Superseded) as exc:
        log.info("stage_stopped", job_id=job_id, stage=stage, reason=type(exc).__name__)
        jobstate.release_lease(job_id)
        return None
    except StageError as exc:
        jobstate.fail(job_id, exc.code, exc.message, exc.param)
        return None
    except Exception as exc:
        log.exception("stage_failed", job_id=job_id, stage=stage)
        jobstate.fail(job_id, "internal_error", f"Stage '{stage}' failed: {type(exc).__name__}: {exc}")
        return None
    jobstate.release_lease(job_id)
    if next_stage is not None:
        enqueue_stage(next_stage, job_id)
    log.info("stage_finished", job_id=job_id, stage=stage, next=next_stage)
    return next_stage


def _register(stage: str) -> None:
    @celery_app.task(name=task_name(stage))
    def _stage_task(job_id: str) -> str | None:
        return run_stage(stage, job_id)


for _stage in STAGES:
    _register(_stage)


@celery_app.task(name="guardtune.pipeline.start")
def start(job_id: str) -> str | None:
    """The API's entry point (enqueued after the job's commit)."""
    return run_stage("validate", job_id)


@celery_app.task(name="guardtune.gpu.onboard")
def onboard(model_id: str) -> dict:
    return onboard_base_model(model_id)


@celery_app.task(name="guardtune.gpu.align")
def align(model_id: str, onboard: bool = True) -> dict:
    """Align ``model_id`` into ``<model_id>-aligned`` (cached) and, with ``onboard``, onboard it."""
    return align_base_model(model_id, onboard=onboard)


@celery_app.task(name="guardtune.reap")
def reap_stale_jobs() -> list:
    actions = reap()
    for job_id, action in actions:
        if action != "failed":
            enqueue_stage(action, job_id)
    return actions


@celery_app.on_after_finalize.connect
def _schedule_reaper(sender, **_) -> None:
    from core.settings import get_settings

    sender.add_periodic_task(get_settings().reaper_interval_s, reap_stale_jobs.s(), name="reap stale jobs")


@celery_app.task(name="guardtune.ping")
def ping(payload: dict) -> dict:
    """A round trip through broker, worker and result backend (health and tests)."""
    return {"echo": payload, "worker": f"{socket.gethostname()}:{os.getpid()}"}
