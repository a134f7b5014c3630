"""Rows to wire objects: a ``Job`` (with its safety report), its events, checkpoints and
safety report as the OpenAI-shaped bodies of :mod:`api.jobs.schemas`.

Contracts: pure functions of the rows given (no queries, no session); a missing report
gives ``None`` summaries; a job's stored ``safety`` dict is read through
:meth:`core.jobs.config.SafetyConfig.stored`, so defaults come from one place; event levels
and types outside the wire's vocabulary answer as ``info`` / ``message``.
"""

from __future__ import annotations

from typing import Any

from api.jobs.schemas import (
    CheckpointMetrics,
    EventLevel,
    EventType,
    FineTuningJob,
    Hyperparameters,
    IntegrationIn,
    JobCheckpoint,
    JobError,
    JobEstimate,
    JobEvent,
    Method,
    SafetyReport,
    SafetyState,
)
from core.jobs.config import SafetyConfig
from core.jobs.estimate import JobEstimate as Estimate
from core.jobs.vocab import JobStatus
from core.models import Checkpoint, Job
from core.models import JobEvent as JobEventRow
from core.models import SafetyReport as SafetyReportRow


def _job_error(error: dict[str, Any] | None) -> JobError | None:
    if not error:
        return None
    return JobError(
        code=str(error.get("code") or "error"), message=str(error.get("message") or ""), param=error.get("param")
    )


def safety_state(job: Job, report: SafetyReportRow | None) -> SafetyState:
    config = SafetyConfig.stored(job.safety)
    return SafetyState(
        **config.model_dump(),
        stage=job.stage,
        scan_summary=report.scan if report else None,
        eval_summary=report.evaluation if report else None,
        gate=report.gate if report else None,
    )


def job_object(job: Job, report: SafetyReportRow | None) -> FineTuningJob:
    hp = job.hyperparameters or {}
    method = Method.model_validate(job.method or {"type": "supervised", "supervised": {"hyperparameters": hp}})
    return FineTuningJob(
        id=job.id,
        created_at=job.created_at,
        error=_job_error(job.error),
        fine_tuned_model=job.fine_tuned_model,
        finished_at=job.finished_at,
        hyperparameters=Hyperparameters.model_validate(hp),
        model=job.parent_model or job.model,
        organization_id=job.org_id,
        result_files=list(job.result_files or []),
        seed=job.seed,
        status=JobStatus(job.status),
        trained_tokens=job.trained_tokens,
        training_file=job.training_file_id,
        validation_file=job.validation_file_id,
        estimated_finish=job.estimated_finish,
        integrations=[IntegrationIn.model_validate(integration) for integration in job.integrations or []],
        metadata=job.metadata_,
        method=method,
        user_provided_suffix=job.suffix,
        safety=safety_state(job, report),
    )


def event_object(row: JobEventRow) -> JobEvent:
    level: EventLevel = "info"
    match row.level:
        case "info" | "warn" | "error" as known_level:
            level = known_level
    kind: EventType = "message"
    match row.type:
        case "message" | "metrics" as known_kind:
            kind = known_kind
    return JobEvent(id=row.id, created_at=row.created_at, level=level, message=row.message, type=kind, data=row.data)


def checkpoint_object(job: Job, row: Checkpoint) -> JobCheckpoint:
    metrics = {**(row.metrics or {}), "step": row.step}
    return JobCheckpoint(
        id=row.id,
        created_at=row.created_at,
        fine_tuned_model_checkpoint=f"ft:{job.model}:{job.org_id}:{job.suffix or ''}:{job.id}:ckpt-step-{row.step}",
        fine_tuning_job_id=job.id,
        metrics=CheckpointMetrics(**metrics),
        step_number=row.step,
    )


def report_object(job: Job, report: SafetyReportRow | None) -> SafetyReport:
    return SafetyReport(
        job_id=job.id,
        status=JobStatus(job.status),
        stage=job.stage,
        config=job.safety or {},
        scan=report.scan if report else None,
        training=report.training if report else None,
        evaluation=report.evaluation if report else None,
        gate=report.gate if report else None,
        fine_tuned_model=job.fine_tuned_model,
        updated_at=report.updated_at if report else None,
    )


def estimate_object(job: Job, estimate: Estimate) -> JobEstimate:
    """The dry run's answer: the job ``build_job`` resolved (never stored) and its estimate."""
    return JobEstimate(
        model=job.model,
        training_file=job.training_file_id,
        method=Method.model_validate(job.method),
        hyperparameters=Hyperparameters.model_validate(job.hyperparameters),
        safety=safety_state(job, None),
        examples=estimate.examples,
        tokens=estimate.tokens,
        steps=estimate.steps,
        estimated_seconds=estimate.seconds,
        stages={str(stage): seconds for stage, seconds in estimate.stages.items()},
        tokens_per_second=estimate.tokens_per_second,
        measured_training_runs=estimate.train_runs,
    )
