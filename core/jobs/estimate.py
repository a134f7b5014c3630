"""What a job will take, from the deployment's measured throughput.

Every stage that runs to its end records its wall time (:func:`record`, a ``stage_runs``
row); ``train`` also records the tokens it trained, counted as the estimate counts them: the
training file's estimated tokens (``File.n_tokens``, from upload) × epochs. An estimate
reads the medians of each stage's newest ``GUARDTUNE_ESTIMATE_WINDOW`` runs: training takes
planned tokens ÷ the median tokens per second, every other stage its median seconds.

A stage never measured on this deployment has no estimate (``None``): a job estimate's
``seconds`` is ``None`` until every stage has run once, and a job's ``estimated_finish``
(:func:`finish_after`) counts only the stages measured so far (a lower bound on a new
deployment, ``None`` while none of the remaining ones is measured).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.jobs.config import Hyperparameters
from core.jobs.pipeline import PIPELINE, Stage
from core.models import File, Job, StageRun


def planned_tokens(file_tokens: int, n_epochs: int) -> int:
    """The tokens a job trains: its training file's estimated tokens, once per epoch."""
    return file_tokens * n_epochs


def planned_steps(n_examples: int, batch_size: int, n_epochs: int) -> int:
    """Optimizer steps: one per batch of ``batch_size`` examples (the last may be short), per epoch."""
    return math.ceil(n_examples / batch_size) * n_epochs


def record(session: Session, job_id: str, stage: Stage, seconds: float, tokens: int | None = None) -> None:
    """A finished stage's wall time (and tokens, for ``train``), in ``session``'s transaction."""
    session.add(StageRun(job_id=job_id, stage=stage, seconds=seconds, tokens=tokens, finished_at=time.time()))


@dataclass(frozen=True)
class Throughput:
    """The medians of the recent runs: ``stage_seconds`` of every measured stage but
    ``train``, and training's ``tokens_per_second``; ``train_runs``: how many training runs
    that median is of."""

    stage_seconds: dict[Stage, float] = field(default_factory=dict)
    tokens_per_second: float | None = None
    train_runs: int = 0

    def seconds(self, stage: Stage, tokens: int) -> float | None:
        """The expected wall time of ``stage`` for a job of ``tokens`` planned tokens."""
        if stage == Stage.TRAIN:
            return tokens / self.tokens_per_second if self.tokens_per_second else None
        return self.stage_seconds.get(stage)


def measured(session: Session, window: int) -> Throughput:
    """The deployment's throughput over each stage's newest ``window`` runs."""
    seconds: dict[Stage, float] = {}
    rates: list[float] = []
    for spec in PIPELINE:
        rows = session.execute(
            select(StageRun.seconds, StageRun.tokens)
            .where(StageRun.stage == spec.stage)
            .order_by(StageRun.seq.desc())
            .limit(window)
        ).all()
        if spec.stage == Stage.TRAIN:
            rates = [tokens / secs for secs, tokens in rows if tokens and secs > 0]
        elif rows:
            seconds[spec.stage] = statistics.median(secs for secs, _ in rows)
    return Throughput(seconds, statistics.median(rates) if rates else None, len(rates))


@dataclass(frozen=True)
class JobEstimate:
    """A job's size and expected wall time: ``stages`` maps each stage to its expected
    seconds (``None``: never measured here); ``seconds`` is their sum, ``None`` unless all are known."""

    examples: int
    tokens: int
    steps: int
    stages: dict[Stage, float | None]
    tokens_per_second: float | None
    train_runs: int

    @property
    def seconds(self) -> float | None:
        known = [s for s in self.stages.values() if s is not None]
        return sum(known) if len(known) == len(self.stages) else None


def estimate(throughput: Throughput, n_examples: int, file_tokens: int, hp: Hyperparameters) -> JobEstimate:
    """The estimate of a job training ``n_examples`` examples (``file_tokens`` estimated tokens) with ``hp``."""
    tokens = planned_tokens(file_tokens, hp.n_epochs)
    return JobEstimate(
        examples=n_examples,
        tokens=tokens,
        steps=planned_steps(n_examples, hp.batch_size, hp.n_epochs),
        stages={spec.stage: throughput.seconds(spec.stage, tokens) for spec in PIPELINE},
        tokens_per_second=throughput.tokens_per_second,
        train_runs=throughput.train_runs,
    )


def job_tokens(session: Session, job: Job) -> int:
    """The job's planned tokens (its training file's estimated tokens × its epochs)."""
    file_tokens = session.scalar(select(File.n_tokens).where(File.id == job.training_file_id)) or 0
    return planned_tokens(file_tokens, Hyperparameters.model_validate(job.hyperparameters or {}).n_epochs)


def remaining(throughput: Throughput, tokens: int, stages: list[Stage]) -> float | None:
    """The expected seconds of ``stages`` for a job of ``tokens`` planned tokens: the measured
    ones added up; ``None`` when none of them is measured."""
    known = [s for s in (throughput.seconds(stage, tokens) for stage in stages) if s is not None]
    return sum(known) if known else None


def finish_after(session: Session, job: Job, stages: list[Stage], window: int) -> int | None:
    """When ``job`` should finish if ``stages`` (those still to run, in order) start now
    (:func:`remaining`; ``None`` when none of them is measured)."""
    seconds = remaining(measured(session, window), job_tokens(session, job), stages)
    return None if seconds is None else int(time.time() + seconds)


def stages_from(stage: Stage, *, including: bool = True) -> list[Stage]:
    """The pipeline's stages from ``stage`` on (``including`` it or not)."""
    order = [spec.stage for spec in PIPELINE]
    return order[order.index(stage) + (0 if including else 1) :]
