"""The pipeline, declared once: its stages in order, each with its Celery task and queue and
the ``stage`` a running job shows while it runs.

Every stage is a plain function ``worker.pipeline.<stage>.run(job_id)``; when it returns and
the job is still unfinished, the next stage of :data:`PIPELINE` is queued (a stage that ends
the job, the gate blocking say, just ends it). Tasks are named ``guardtune.pipeline.<stage>``;
the API starts a job through :data:`START_TASK`, which runs ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.jobs.vocab import JobStage

DEFAULT_QUEUE = "default"  # light work
GPU_QUEUE = "gpu"  # model work
REAPER_QUEUE = "reaper"  # the reaper's periodic task: never behind a stage (consumed where beat runs)
REAP_TASK = "guardtune.reap"
SWEEP_TASK = "guardtune.sweep_deletions"  # retries failed deletions, on the reaper's queue too
EXPIRE_TASK = "guardtune.sweep_expired"  # deletes expired files and ends expired uploads, on the reaper's queue too
START_TASK = "guardtune.pipeline.start"
WEBHOOK_TASK = "guardtune.webhooks.deliver"  # a finished job's webhook deliveries (core.webhooks), default queue


class Stage(StrEnum):
    """A stage of the pipeline (and the name of its module in ``worker.pipeline``)."""

    VALIDATE = "validate"
    SCAN = "scan"
    TRAIN = "train"
    EVALUATE = "evaluate"
    GATE = "gate"
    RELEASE = "release"

    @property
    def task(self) -> str:
        return f"guardtune.pipeline.{self.value}"

    @property
    def queue(self) -> str:
        return _SPEC[self].queue

    @property
    def next(self) -> Stage | None:
        """The stage queued after this one, None after the last."""
        order = list(_SPEC)
        index = order.index(self) + 1
        return order[index] if index < len(order) else None

    @classmethod
    def running_as(cls, job_stage: str | None) -> Stage:
        """The stage that (re)runs a job whose ``stage`` field is ``job_stage`` (KeyError if
        none, a ``None`` stage included)."""
        if job_stage is None:
            raise KeyError(job_stage)
        return _BY_JOB_STAGE[job_stage]


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    queue: str
    job_stage: JobStage | None  # the job's ``stage`` while it runs (None: validating or releasing)


PIPELINE: tuple[StageSpec, ...] = (
    StageSpec(Stage.VALIDATE, DEFAULT_QUEUE, None),
    StageSpec(Stage.SCAN, GPU_QUEUE, JobStage.SCANNING),
    StageSpec(Stage.TRAIN, GPU_QUEUE, JobStage.TRAINING),
    StageSpec(Stage.EVALUATE, GPU_QUEUE, JobStage.EVALUATING),
    StageSpec(Stage.GATE, DEFAULT_QUEUE, JobStage.GATING),
    StageSpec(Stage.RELEASE, DEFAULT_QUEUE, None),
)
_SPEC = {spec.stage: spec for spec in PIPELINE}
_BY_JOB_STAGE: dict[str, Stage] = {spec.job_stage: spec.stage for spec in PIPELINE if spec.job_stage is not None}
