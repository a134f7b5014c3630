"""Fine-tuning jobs: create (validate, resolve, limit, record, enqueue), read, cancel, pause, resume.

The checks and resolution of a create body are :mod:`api.jobs.build`; rows become wire
objects in :mod:`api.jobs.presenters`; query parameters are parsed in :mod:`api.jobs.params`.

Decisions where OpenAI's API leaves room:

* ``"auto"`` hyperparameters are resolved at creation from the validated training file
  (:meth:`core.jobs.config.Hyperparameters.resolve`: OpenAI's published epochs heuristic, a
  batch of 8 or the whole file if smaller, a learning-rate multiplier of 1.0). Explicit
  values are kept as given.
* The base model must be in the registry (``BaseModelEntry``, not ``failed``): otherwise
  404 ``model_not_found``. ``model="ft:…"`` continues training from a released model of the
  caller's organization (its adapter is the new job's starting point; its base model stays
  the safety reference and the gate's baseline); unknown, revoked or another organization's:
  400 ``invalid_model``. The job echoes the ``ft:`` model it was created with.
* Cancel is idempotent: a cancelled job answers as it is; a job that already succeeded or
  failed cannot be cancelled and answers 400 ``job_not_cancellable`` (as OpenAI does).
* ``Idempotency-Key``: the same key in the same organization returns the job it created
  (200, same body); reusing a key with a different request body answers 422
  ``idempotency_key_reused`` (the request's SHA-256 is kept in the job's audit record).
* The ``supervised`` and ``dpo`` methods exist (``api.jobs.build``); ``integrations`` holds at
  most one W&B integration (OpenAI's shape), echoed on the job; the worker logs to it with the
  operator's key (``worker.pipeline.tracking``).
* Pause: only a ``running`` job can be paused (idempotent on a paused one); it becomes
  ``paused`` at once and its worker checkpoints at the next training step boundary (or
  stops at the end of its current stage) and takes other work. Resume: only a ``paused``
  job whose worker has let go (409 ``job_pausing`` while it is still checkpointing; a
  worker silent for ``GUARDTUNE_STALE_JOB_AFTER_S`` counts as gone); it becomes ``queued``
  and its stage is queued again, continuing from the checkpoint.
  A finished job answers 400 ``job_not_pausable`` / ``job_not_paused``, as cancel does.
"""

from __future__ import annotations

import builtins
import time
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Caller
from api.files.repository import FileRepository
from api.jobs.build import build_job
from api.jobs.params import fingerprint
from api.jobs.presenters import checkpoint_object, estimate_object, event_object, job_object, report_object
from api.jobs.repository import JobRepository
from api.jobs.schemas import (
    FineTuningJob,
    JobCheckpoint,
    JobCreate,
    JobEstimate,
    JobEvent,
    SafetyReport,
)
from api.metrics import JOBS_CREATED
from api.schemas import CursorPage
from core import dispatch, outbox
from core.audit import service as audit
from core.audit.repository import AuditRepository
from core.db import read_outside_transaction
from core.errors import Conflict, InvalidRequest, NotFound, RateLimited, Unprocessable
from core.etags import body_format, row_validator
from core.ids import new_id
from core.jobs import estimate as estimates
from core.jobs.config import Hyperparameters
from core.jobs.pipeline import DEFAULT_QUEUE, START_TASK, Stage
from core.jobs.transitions import transition
from core.jobs.vocab import ACTIVE, TERMINAL, ErrorCode, JobStatus
from core.logging import get_logger
from core.models import Job, now
from core.models import JobEvent as JobEventRow
from core.orgs.repository import OrgRepository
from core.ratelimit import take_request
from core.settings import Settings

log = get_logger(__name__)

MAX_IDEMPOTENCY_KEY = 200
# Part of every row validator of a job or events body: a deploy that changes their rendering changes the tags.
BODY_FORMAT = body_format(FineTuningJob, CursorPage[JobEvent])


def _job_not_found(job_id: str) -> NotFound:
    return NotFound(f"No such fine-tuning job: {job_id!r}.", code="job_not_found", param="fine_tuning_job_id")


def _concurrency_limit(settings: Settings, org_max: int | None) -> int:
    return settings.max_concurrent_jobs_per_org if org_max is None else org_max


class JobService:
    def __init__(self, session: Session, settings: Settings):
        self.session = session
        self.settings = settings

    def _jobs(self, caller: Caller) -> JobRepository:
        return JobRepository(self.session, caller.org_id)

    # -- reads -----------------------------------------------------------------------------
    def get(self, caller: Caller, job_id: str) -> Job:
        job = self._jobs(caller).get(job_id)
        if job is None:
            raise _job_not_found(job_id)
        return job

    def job_validator(self, caller: Caller, job_id: str) -> str:
        """The ETag of the job's body (:meth:`present`), from row versions alone."""
        versions = self._jobs(caller).versions(job_id)
        if versions is None:
            raise _job_not_found(job_id)
        return row_validator(BODY_FORMAT, "job", job_id, *versions)

    def get_presented(self, caller: Caller, job_id: str) -> tuple[str, FineTuningJob]:
        """``(ETag, body)`` of the job (as :meth:`job_validator` and :meth:`present`), from one
        query for the job and its report."""
        found = self._jobs(caller).get_with_report(job_id)
        if found is None:
            raise _job_not_found(job_id)
        job, report = found
        version = None if report is None else report.version
        return row_validator(BODY_FORMAT, "job", job_id, job.version, version), job_object(job, report)

    def read_only(self) -> None:
        """This request only reads, each query on its own (``core.db.read_outside_transaction``)."""
        read_outside_transaction(self.session)

    def release(self) -> None:
        """End this request's transaction on the calling thread, so that its connection goes
        back to the pool without another trip to a thread (``api.deps.get_db``)."""
        self.session.close()

    def events_validator(self, caller: Caller, job_id: str, *, after: str | None, limit: int, order: str) -> str:
        """The ETag of one page of the job's events (:meth:`events`), from the newest event."""
        marks = self._jobs(caller).event_marks(job_id)
        if marks is None:
            raise _job_not_found(job_id)
        return row_validator(BODY_FORMAT, "events", job_id, *marks, after, limit, order)

    def present(self, job: Job) -> FineTuningJob:
        return job_object(job, JobRepository(self.session, job.org_id).report(job.id))

    def list(
        self, caller: Caller, *, after: str | None, limit: int, metadata: dict[str, str] | None
    ) -> tuple[builtins.list[FineTuningJob], bool]:
        jobs = self._jobs(caller)
        rows, has_more = jobs.list(after=after, limit=limit, metadata=metadata)
        reports = jobs.reports([row.id for row in rows])
        return [job_object(row, reports.get(row.id)) for row in rows], has_more

    def events(
        self, caller: Caller, job_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[builtins.list[JobEvent], bool]:
        job = self.get(caller, job_id)
        rows, has_more = self._jobs(caller).events(job.id, after=after, limit=limit, order=order)
        return [event_object(row) for row in rows], has_more

    def checkpoints(
        self, caller: Caller, job_id: str, *, after: str | None, limit: int
    ) -> tuple[builtins.list[JobCheckpoint], bool]:
        job = self.get(caller, job_id)
        rows, has_more = self._jobs(caller).checkpoints(job.id, after=after, limit=limit)
        return [checkpoint_object(job, row) for row in rows], has_more

    def safety_report(self, caller: Caller, job_id: str) -> SafetyReport:
        job = self.get(caller, job_id)
        return report_object(job, self._jobs(caller).report(job.id))

    # -- create ----------------------------------------------------------------------------
    def create(self, caller: Caller, body: JobCreate, idempotency_key: str | None) -> Job:
        take_request("job_creations", caller.org_id)  # 429 (GUARDTUNE_JOB_CREATIONS_PER_MINUTE) before any query
        request_sha = fingerprint(body)
        if idempotency_key is not None:
            idempotency_key = idempotency_key.strip()
            if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
                raise InvalidRequest(
                    f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.",
                    code="invalid_idempotency_key",
                    param="Idempotency-Key",
                )
            existing = self._jobs(caller).get_by_idempotency_key(idempotency_key)
            if existing is not None:
                return self._replay(existing, request_sha)

        try:
            # One create (or file delete) per organization at a time: the checks below and
            # the insert see the same files and the same count of active jobs.
            OrgRepository(self.session).get(caller.org_id, for_update=True)
            if idempotency_key is not None:
                existing = self._jobs(caller).get_by_idempotency_key(idempotency_key)
                if existing is not None:  # a concurrent request with this key committed first
                    self.session.rollback()
                    return self._replay(existing, request_sha)
            job = build_job(self.session, self.settings, caller, body, idempotency_key)
            self._check_concurrency(caller)
            jobs = self._jobs(caller)
            jobs.add(job)
            jobs.add_event(
                JobEventRow(id=new_id("ftevent"), job_id=job.id, message=f"Created fine-tuning job: {job.id}")
            )
            jobs.add_event(
                JobEventRow(
                    id=new_id("ftevent"), job_id=job.id, message=f"Validating training file: {job.training_file_id}"
                )
            )
            audit.record(
                self.session,
                actor=caller.actor,
                action="job.create",
                target=job.id,
                details={
                    "org_id": caller.org_id,
                    "model": job.model,
                    "parent_model": job.parent_model,
                    "training_file": job.training_file_id,
                    "validation_file": job.validation_file_id,
                    "hyperparameters": job.hyperparameters,
                    "safety": job.safety,
                    "idempotency_key": idempotency_key,
                    "request_sha256": request_sha,
                },
            )
            message = outbox.add(self.session, job.id, START_TASK, DEFAULT_QUEUE)  # sent after the commit
            self.session.commit()
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race.
            self.session.rollback()
            existing = self._jobs(caller).get_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return self._replay(existing, request_sha)
        JOBS_CREATED.inc()
        self._enqueue(caller, job, message)
        return job

    def estimate(self, caller: Caller, body: JobCreate) -> JobEstimate:
        """The dry run of :meth:`create` (``?dry_run=true``): the same checks of the body (the
        same errors), then the job's size and expected wall time from the deployment's measured
        throughput (:mod:`core.jobs.estimate`). Writes nothing (no job, event, audit record or
        outbox row) and takes nothing from the creation rate limit or the concurrency limit."""
        job = build_job(self.session, self.settings, caller, body, None)
        training = FileRepository(self.session, caller.org_id).get(job.training_file_id)
        assert training is not None  # build_job found it usable
        throughput = estimates.measured(self.session, self.settings.estimate_window)
        hp = Hyperparameters.model_validate(job.hyperparameters)
        answer = estimate_object(job, estimates.estimate(throughput, training.n_examples, training.n_tokens, hp))
        self.session.rollback()
        return answer

    def _replay(self, job: Job, request_sha: str) -> Job:
        recorded = AuditRepository(self.session).details_of("job.create", job.id)
        if recorded and recorded.get("request_sha256") not in (None, request_sha):
            raise Unprocessable(
                "This Idempotency-Key was already used with a different request body; use a new key.",
                code="idempotency_key_reused",
                param="Idempotency-Key",
            )
        return job

    def _check_concurrency(self, caller: Caller) -> None:
        """Call under the organization's row lock, so concurrent creates count in turn."""
        org = OrgRepository(self.session).get(caller.org_id)
        limit = _concurrency_limit(self.settings, org.max_concurrent_jobs if org else None)
        active = self._jobs(caller).count_active()
        if active >= limit:
            raise RateLimited(
                f"Too many concurrent fine-tuning jobs: this organization has {active} active "
                f"(limit {limit}). Wait for one to finish or cancel one, then retry.",
                code="concurrent_jobs_limit",
                headers={"x-should-retry": "false"},
            )

    def _enqueue(self, caller: Caller, job: Job, message: outbox.Pending) -> None:
        """Send the job's outbox row to the pipeline, after the commit (so a worker always
        finds the job). If this process dies first, the reaper sends it; if the broker
        refuses, the job fails ``queue_unavailable`` now rather than wait for it."""
        try:
            outbox.send(message)
        except Exception as exc:
            log.error("job_enqueue_failed", job_id=job.id, error=str(exc))
            error = {
                "code": ErrorCode.QUEUE_UNAVAILABLE,
                "message": "The job could not be queued because the job queue is unreachable. Create it again.",
                "param": None,
            }
            failed = transition(
                self.session,
                job.id,
                JobStatus.FAILED,
                finished_at=now(),
                error=error,
                message="The job could not be queued.",
                level="error",
                action="job.fail",
                details={"org_id": job.org_id, "code": ErrorCode.QUEUE_UNAVAILABLE, "error": str(exc)[:500]},
            )
            if not failed:  # it finished meanwhile
                self.session.rollback()
                return
            self.session.commit()

    # -- cancel ----------------------------------------------------------------------------
    def cancel(self, caller: Caller, job_id: str) -> Job:
        job = self._locked(caller, job_id)
        if job.status == JobStatus.CANCELLED:
            self.session.rollback()
            return job  # idempotent: nothing changes, nothing to record
        if job.status not in ACTIVE:
            self.session.rollback()
            raise InvalidRequest(
                f"Job {job.id} has already {job.status} and can no longer be cancelled.",
                code="job_not_cancellable",
                param="fine_tuning_job_id",
            )
        transition(  # the row is locked: the move happens
            self.session,
            job.id,
            JobStatus.CANCELLED,
            cancel_requested=True,  # a running worker stops at its next step
            finished_at=now(),
            estimated_finish=None,
            message="Fine-tuning job cancelled.",
            actor=caller.actor,
            action="job.cancel",
            details={"org_id": caller.org_id, "previous_status": job.status, "stage": job.stage},
        )
        self.session.commit()
        return job

    # -- pause / resume ----------------------------------------------------------------------
    def pause(self, caller: Caller, job_id: str) -> Job:
        job = self._locked(caller, job_id)
        if job.status == JobStatus.PAUSED:
            self.session.rollback()
            return job  # idempotent
        if job.status != JobStatus.RUNNING:
            raise self._refuse(
                job, "paused", "job_not_pausable", "only running jobs can be paused (cancel it instead)."
            )
        # The worker checkpoints at its next step boundary and lets go.
        message = "Fine-tuning job paused; training stops at the next step."
        self._move(caller, job, JobStatus.PAUSED, "job.pause", message, estimated_finish=None)
        return job

    def resume(self, caller: Caller, job_id: str) -> Job:
        job = self._locked(caller, job_id)
        if job.status != JobStatus.PAUSED:
            raise self._refuse(job, "resumed", "job_not_paused", "only paused jobs can be resumed.")
        if job.worker_id is not None and (job.heartbeat_at or 0) > time.time() - self.settings.stale_job_after_s:
            self.session.rollback()
            raise Conflict(
                f"Job {job.id} is still pausing: its worker is saving a checkpoint. Retry in a few seconds.",
                code="job_pausing",
                param="fine_tuning_job_id",
                headers={"x-should-retry": "true", "Retry-After": "5"},
            )
        stage = Stage.running_as(job.stage)
        message = outbox.add(self.session, job.id, stage.task, stage.queue)
        # ``running`` again once a worker takes up its stage.
        resumed = "Fine-tuning job resumed; it continues from its last checkpoint."
        self._move(caller, job, JobStatus.QUEUED, "job.resume", resumed, worker_id=None)
        dispatch.send(message)  # after the commit (when a GPU slot is free); the reaper replays it if this fails
        return job

    def _locked(self, caller: Caller, job_id: str) -> Job:
        job = self._jobs(caller).get(job_id, for_update=True)
        if job is None:
            raise _job_not_found(job_id)
        return job

    def _refuse(self, job: Job, done: str, code: str, rule: str) -> InvalidRequest:
        """The 400 for a job that cannot be ``done`` now (the transaction is rolled back)."""
        self.session.rollback()
        message = (
            f"Job {job.id} has already {job.status} and can no longer be {done}."
            if job.status in TERMINAL
            else f"Job {job.id} is {job.status}; {rule}"
        )
        return InvalidRequest(message, code=code, param="fine_tuning_job_id")

    def _move(self, caller: Caller, job: Job, status: JobStatus, action: str, message: str, **values: Any) -> None:
        """A customer's move of the locked ``job`` to ``status``, with its event and audit
        record; committed."""
        details = {"org_id": caller.org_id, "status": status, "stage": job.stage}
        transition(
            self.session,
            job.id,
            status,
            allowed_from=(JobStatus(job.status),),
            message=message,
            actor=caller.actor,
            action=action,
            details=details,
            **values,
        )
        self.session.commit()
