"""Stage ``train`` (GPU): LoRA fine-tuning with the job's safety objective.

Every step can become a ``metrics`` event; checkpoints go to the object store and the
checkpoints table, the newest ``GUARDTUNE_KEEP_CHECKPOINTS`` kept there and in the work dir
(which is removed however the stage ends); a redelivered task resumes from the last stored checkpoint; a cancel
stops training before the next step; a pause checkpoints that step boundary and frees the
worker (resume re-queues this stage, which continues from that checkpoint). With a
validation file, checkpoint steps carry ``valid_loss`` / ``valid_mean_token_accuracy``.
A job created with ``model="ft:…"`` starts from that released adapter's weights (downloaded
and checked against its released digest); its reference stays the base model.
A DPO job (``method.type = "dpo"``) trains its preference pairs with ``safety.dpo`` at the
job's ``beta``; its metrics carry ``train_reward_margin`` / ``train_reward_accuracy`` (and
``valid_reward_accuracy`` beside the validation pairs' DPO ``valid_loss``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, select

from core.db import session_scope
from core.ids import new_id
from core.jobs import estimate
from core.jobs.config import AUTO_DPO_BETA, BASE_LEARNING_RATE, FLAG_THRESHOLD, Hyperparameters, SafetyConfig
from core.jobs.pipeline import Stage
from core.jobs.transitions import update_live
from core.jobs.vocab import JobStage, JobStatus, Objective, ReferenceMode
from core.models import BaseModelEntry, Checkpoint, File, Job, SafetyReport
from core.preference import job_method
from core.settings import get_settings
from core.storage import download_dir, get_store, upload_dir
from worker.pipeline import jobstate
from worker.pipeline.jobstate import JobGone, Paused
from worker.pipeline.reference import load_or_build, uses_cache
from worker.pipeline.resources import (
    adapter_prefix,
    checkpoint_prefix,
    download_parent_adapter,
    iter_file_examples,
    load_model,
    micro_batch_tokens,
    read_scan_risks,
    token_limit,
    work_dir,
)
from worker.pipeline.tracking import JobTracking, open_tracking

if TYPE_CHECKING:
    from safety.train_config import TrainConfig, TrainResult
    from safety.train_metrics import StepMetrics


def train_config(job: Job, max_seq_len: int, micro_batch_tokens: int | None = None) -> TrainConfig:
    """The trainer's config from the job (hyperparameters, safety) and operator settings
    (``GUARDTUNE_OBJECTIVE``, with ``bounded``'s cutoff at ``GUARDTUNE_FLAG_THRESHOLD``;
    ``GUARDTUNE_ACTIVATION_CHECKPOINTING`` on this device), its micro-batches of
    ``micro_batch_tokens`` (``resources.micro_batch_tokens``)."""
    from safety.train_config import TrainConfig

    settings = get_settings()
    hp, safety = Hyperparameters.model_validate(job.hyperparameters or {}), SafetyConfig.stored(job.safety, settings)
    dpo = job_method(job.method) == "dpo"
    return TrainConfig(
        mode=safety.mode,
        constant_kl_weight=safety.constant_kl_weight,
        kl_weight_min=safety.kl_weight.min,
        kl_weight_max=safety.kl_weight.max,
        risk_weighting=safety.risk_weighting,
        objective=settings.objective,
        # bounded's cutoff is the scan's flag threshold; paper has none and keeps the default,
        # so its checkpoints (also those written before the option) resume whatever the threshold
        sft_cutoff_risk=settings.flag_threshold if settings.objective == Objective.BOUNDED else FLAG_THRESHOLD,
        learning_rate=BASE_LEARNING_RATE * hp.learning_rate_multiplier,
        n_epochs=hp.n_epochs,
        batch_size=hp.batch_size,
        micro_batch_tokens=micro_batch_tokens,
        activation_checkpointing=settings.checkpointing,
        max_seq_len=max_seq_len,
        seed=job.seed or 0,
        checkpoint_every=settings.checkpoint_every,
        keep_checkpoints=settings.keep_checkpoints,
        reference=ReferenceMode.CACHED if uses_cache(job) else ReferenceMode.EXACT,
        method="dpo" if dpo else "supervised",
        dpo_beta=hp.beta if dpo and hp.beta is not None else AUTO_DPO_BETA,
    )


def run(job_id: str) -> int | None:
    """Train the job; the tokens this run trained (its planned tokens, ``core.jobs.estimate``,
    times the share of the steps it ran: a resumed run ran fewer), None if it trained nothing.
    With ``GUARDTUNE_WORKER_GPUS`` above 1 the training itself runs data-parallel in that many
    processes (:func:`launch_ranks`); this process keeps the lease."""
    from safety.train_config import TrainOutcome

    with session_scope() as session:
        jobstate.enter_stage(session, job_id, JobStage.TRAINING, "Fine-tuning started")
        job = session.get_one(Job, job_id)
        report = session.get(SafetyReport, job_id)
        if report is not None and report.training and get_store().list(adapter_prefix(job) + "/"):
            return None  # trained before a crash
        tokens = estimate.job_tokens(session, job)
        throughput = estimate.measured(session, get_settings().estimate_window)
        after = estimate.remaining(throughput, tokens, estimate.stages_from(Stage.TRAIN, including=False)) or 0.0
    gpus = get_settings().worker_gpus
    if gpus > 1:
        outcome = launch_ranks(job_id, gpus, after)
    else:
        outcome = train_job(job_id, after)
    if outcome.outcome == TrainOutcome.PAUSED:
        with session_scope() as session:  # the event tells the truth: the lease goes with it
            jobstate.release_lease(job_id, session)
            jobstate.add_event(
                session,
                job_id,
                f"Training paused at step {outcome.steps} of {outcome.total_steps}; "
                "its checkpoint is saved and the worker is free",
            )
        raise Paused(job_id)
    if outcome.outcome == TrainOutcome.CANCELLED:
        with session_scope() as session:
            jobstate.add_event(
                session, job_id, f"Training stopped at step {outcome.steps} of {outcome.total_steps}: cancelled"
            )
        raise JobGone(job_id)
    ran = 0 if outcome.first_step is None else outcome.steps - outcome.first_step
    return tokens * ran // outcome.total_steps if ran > 0 and outcome.total_steps else None


@dataclass(frozen=True)
class TrainedRun:
    """How one training run of a job ended (``safety.train_config.TrainOutcome``), after how
    many of its steps, and the step it started after (None: it ran none)."""

    outcome: str
    steps: int
    total_steps: int
    first_step: int | None


def train_job(job_id: str, after: float) -> TrainedRun:
    """Train the job in this process (one rank of a data-parallel run under ``torchrun``:
    ``safety.distributed``): from its last stored checkpoint if any. Rank 0 reports progress
    (the job's ``estimated_finish`` adds ``after`` seconds), stores the checkpoints and, when
    training completes, the adapter and training report; every rank returns how it ended."""
    from safety import distributed
    from safety.train_config import TrainOutcome
    from safety.trainer import train

    ranks = distributed.world()
    main = ranks.is_main
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        source = session.get_one(BaseModelEntry, job.model).source
        storage_key = session.get_one(File, job.training_file_id).storage_key
        valid_key = session.get_one(File, job.validation_file_id).storage_key if job.validation_file_id else None
        last = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()))
    examples = [example for _, example in iter_file_examples(storage_key)]
    validation = [example for _, example in iter_file_examples(valid_key)] if valid_key else None
    risks, flagged = read_scan_risks(job)
    model, tokenizer = load_model(source)
    safety = SafetyConfig.stored(job.safety)
    method = job_method(job.method)
    exact = method == "dpo" or (safety.regularized and safety.reference == ReferenceMode.EXACT)
    config = train_config(job, token_limit(model), micro_batch_tokens(model, method, exact_reference=exact))
    cache = None
    if config.reference == ReferenceMode.CACHED:
        if not main:
            distributed.barrier()  # rank 0 builds and stores a missing cache first
        cache = load_or_build(job, model, tokenizer, examples)
        if main:
            distributed.barrier()
    with work_dir(job_id) as workdir:  # removed however training ends
        init_adapter = download_parent_adapter(job, workdir / "parent") if last is None else None
        resume_dir = None
        if last is not None:
            resume_dir = download_dir(get_store(), last.storage_prefix, workdir / f"resume-{last.step:06d}")
            if main:
                with session_scope() as session:
                    jobstate.add_event(session, job_id, f"Resumed training from the checkpoint at step {last.step}")
        if main and ranks.size > 1:
            with session_scope() as session:
                jobstate.add_event(session, job_id, f"Training data-parallel in {ranks.size} processes")
        progress = Progress(job, open_tracking(job), after) if main else None
        try:
            result = train(
                model,
                tokenizer,
                examples,
                risks,
                config,
                work_dir=workdir,
                on_step=progress.on_step if progress else None,
                should_cancel=lambda: jobstate.cancel_requested(job_id),
                save_checkpoint=progress.save_checkpoint if progress else None,
                resume_dir=resume_dir,
                flagged=flagged,
                should_pause=lambda: jobstate.pause_requested(job_id),
                validation=validation,
                reference_cache=cache,
                init_adapter=init_adapter,
            )
        finally:
            if progress is not None:
                progress.tracking.close()
        if result.outcome == TrainOutcome.COMPLETED and main:
            _store_result(job, config, result)
    return TrainedRun(
        outcome=result.outcome,
        steps=result.steps,
        total_steps=result.total_steps,
        first_step=progress.first_step if progress else None,
    )


def launch_ranks(job_id: str, gpus: int, after: float) -> TrainedRun:
    """Train ``job_id`` data-parallel in ``gpus`` processes, one per GPU:
    ``python -m torch.distributed.run --standalone --nproc-per-node <gpus> -m
    worker.pipeline.train_ranks <job id> <result file> <after>``, each rank running
    :func:`train_job`; how the run ended, as rank 0 wrote it to the result file. A rank that
    fails makes ``torchrun`` stop the others and exit non-zero: the stage fails as on any
    error (a retry resumes from the last stored checkpoint)."""
    with tempfile.TemporaryDirectory(prefix=f"{job_id}-ranks-") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={gpus}",
            "-m",
            "worker.pipeline.train_ranks",
            job_id,
            str(result_file),
            str(after),
        ]
        done = subprocess.run(command, check=False)
        if done.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"data-parallel training of {job_id} in {gpus} processes exited with {done.returncode}")
        return TrainedRun(**json.loads(result_file.read_text()))


def _store_result(job: Job, config: TrainConfig, result: TrainResult) -> None:
    """A completed run's adapter (to the store) and training report."""
    assert result.adapter_dir is not None  # a completed run wrote its adapter
    upload_dir(get_store(), result.adapter_dir, adapter_prefix(job))
    with session_scope() as session:
        report = session.get(SafetyReport, job.id) or SafetyReport(job_id=job.id)
        report.training = {
            **result.summary,
            "mode": config.mode,
            "kl_weight": {"min": config.kl_weight_min, "max": config.kl_weight_max},
            "risk_weighting": config.risk_weighting,
            "objective": config.objective,
            "reference": config.reference,
            "method": config.method,
            **({"beta": config.dpo_beta} if config.method == "dpo" else {}),
        }
        session.add(report)
        update_live(session, job.id, trained_tokens=result.summary.get("trained_tokens"))
        jobstate.add_event(session, job.id, f"Training finished after {result.steps} steps")


class Progress:
    """The trainer's callbacks: metrics events, ETA, heartbeat, stored checkpoints, and every
    step's metrics to the job's experiment trackers (``tracking``). The job's
    ``estimated_finish``: the end of training at this run's pace, plus ``after``, the measured
    seconds of the stages after training (``core.jobs.estimate``)."""

    def __init__(self, job: Job, tracking: JobTracking, after: float = 0.0):
        self.job, self.tracking, self.started, self.after = job, tracking, time.monotonic(), after
        self.first_step: int | None = None
        self.every = max(1, get_settings().metrics_event_every)

    def on_step(self, m: StepMetrics) -> None:
        if self.first_step is None:
            self.first_step = m.step - 1
        done = m.step - self.first_step
        eta = time.time() + (time.monotonic() - self.started) / done * (m.total_steps - m.step) + self.after
        # Only a running job has a finish to estimate: a pause committed while this step ran
        # cleared the estimate, and it stays cleared (the heartbeat goes on: the worker is
        # still saving its checkpoint).
        estimate = case((Job.status == JobStatus.RUNNING, int(eta)), else_=None)
        with session_scope() as session:
            update_live(session, self.job.id, heartbeat_at=time.time(), estimated_finish=estimate)
            if m.step % self.every == 0 or m.step == m.total_steps:
                jobstate.add_event(session, self.job.id, _step_message(m), type="metrics", data=metrics_data(m))
        self.tracking.log_step(metrics_data(m))

    def save_checkpoint(self, step: int, local_dir: Path, m: StepMetrics) -> None:
        prefix = checkpoint_prefix(self.job, step)
        upload_dir(get_store(), local_dir, prefix)
        with session_scope() as session:
            if session.scalar(select(Checkpoint).where(Checkpoint.job_id == self.job.id, Checkpoint.step == step)):
                return
            session.add(
                Checkpoint(
                    id=new_id("ftckpt"), job_id=self.job.id, step=step, storage_prefix=prefix, metrics=metrics_data(m)
                )
            )
            jobstate.add_event(session, self.job.id, f"Checkpoint saved at step {step}")
        prune_stored_checkpoints(self.job.id, get_settings().keep_checkpoints)


def prune_stored_checkpoints(job_id: str, keep: int) -> list[int]:
    """Delete the job's stored checkpoints (objects, then rows) but the newest ``keep``; the
    steps deleted. Objects go first: a failure leaves rows to retry at the next checkpoint."""
    store = get_store()
    with session_scope() as session:
        old = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()).offset(keep)
        ).all()
        for checkpoint in old:
            store.delete_prefix(checkpoint.storage_prefix + "/")
            session.delete(checkpoint)
        return [checkpoint.step for checkpoint in old]


def metrics_data(m: StepMetrics) -> dict[str, Any]:
    """A metrics event's ``data`` (and a checkpoint's metrics): OpenAI's fields plus the safety
    objective's; ``valid_*`` on steps with a validation pass."""
    data = {
        "step": m.step,
        "total_steps": m.total_steps,
        "train_loss": m.loss,
        "train_mean_token_accuracy": m.train_accuracy,
        "sft_loss": m.sft_loss,
        "kl": m.kl,
        "kl_weight": m.kl_weight,
        "sft_weight": m.sft_weight,
        "risk": m.risk,
        "kl_weight_flagged": m.kl_weight_flagged,
        "kl_weight_unflagged": m.kl_weight_unflagged,
        "tokens_per_s": m.tokens_per_s,
        "learning_rate": m.lr,
    }
    if m.reward_accuracy is not None:  # a DPO step: its pairs' margin and preference accuracy
        data.update(train_reward_margin=m.reward_margin, train_reward_accuracy=m.reward_accuracy)
        if m.valid_loss is not None:
            data.update(valid_loss=m.valid_loss, valid_reward_accuracy=m.valid_accuracy)
    elif m.valid_loss is not None:
        data.update(valid_loss=m.valid_loss, valid_mean_token_accuracy=m.valid_accuracy)
    return data


def _step_message(m: StepMetrics) -> str:
    kl = f", kl={m.kl:.4f}" if m.kl is not None else ""
    valid = f", validation loss={m.valid_loss:.4f}" if m.valid_loss is not None else ""
    return (
        f"Step {m.step}/{m.total_steps}: training loss={m.loss:.4f}{valid}{kl}, "
        f"kl_weight={m.kl_weight:.2f}, risk={m.risk:.2f}"
    )
