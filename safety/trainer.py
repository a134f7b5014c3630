"""LoRA fine-tuning with the risk-adaptive KL objective, as one explicit training loop.

Each optimizer step takes the next ``batch_size × grad_accum_steps`` examples of a
seeded per-epoch shuffle, turns each example's pre-computed risk (1–5) into its own loss
weights (``risk_weighting="example"``, the default; ``"batch"`` gives every example the
weights of the batch's mean risk, the paper's code as an ablation), and minimises
``Σ_i [w_sft_i · CE_i + w_kl_i · KL_i] / N`` (``objective.weighted_loss``). The reference
policy P_ref is the same model with the LoRA adapter disabled; with ``reference="exact"`` its
forward pass runs every micro-batch (skipped when all its examples have ``w_kl == 0``); with
``reference="cached"`` it never runs here: the KL is taken against the reference's top-k
log-probabilities computed once beforehand (``safety.reference``, a lower bound of the exact KL). Everything the worker needs to report, checkpoint, cancel and resume
goes through ``train``'s arguments; nothing here knows about databases or queues.

:func:`train` is the loop, read top to bottom in the manner of torchtune's recipes:
setup (``safety.train_state.setup_run``: data, LoRA, optimizer, schedule, resume), then
per step the cancel / pause checks, the step itself (``safety.train_step.run_step``), the
validation pass and the checkpoint (``safety.train_state.write_run_checkpoint``) on
checkpoint steps; no callbacks other than ``train``'s own arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.jobs import config as defaults
from core.jobs.vocab import ReferenceMode, RiskWeighting, SafetyMode
from safety.data import collate, encode_example
from safety.objective import RiskReduce, token_kl
from safety.reference import ReferenceCache
from safety.train_state import (
    TrainRun,
    checkpoint_name,
    setup_run,
    write_run_checkpoint,
)
from safety.train_step import StepMetrics, run_step, with_validation


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. ``mode``: ``none`` = standard SFT;
    ``constant`` = ``w_kl = constant_kl_weight``, ``w_sft = 1 − w_kl``; ``adaptive`` = the
    paper's risk-set weights (``objective.kl_weights`` with the ``kl_*`` / ``sft_*`` bounds),
    from each example's own risk (``risk_weighting="example"``) or from the step's
    ``risk_reduce`` of its examples' risks (``"batch"``)."""

    mode: SafetyMode = defaults.DEFAULT_MODE
    constant_kl_weight: float = defaults.CONSTANT_KL_WEIGHT
    kl_lo: float = defaults.KL_WEIGHT_LO
    kl_hi: float = defaults.KL_WEIGHT_HI
    sft_lo: float = defaults.SFT_WEIGHT_LO
    sft_hi: float = defaults.SFT_WEIGHT_HI
    risk_weighting: RiskWeighting = defaults.DEFAULT_RISK_WEIGHTING
    risk_reduce: RiskReduce = "mean"
    reference: ReferenceMode = "exact"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = defaults.BASE_LEARNING_RATE
    weight_decay: float = 0.0
    n_epochs: int = defaults.TARGET_EPOCHS
    batch_size: int = defaults.AUTO_BATCH_SIZE  # a job's "auto" (the worker passes the job's resolved size)
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.03
    lr_schedule: Literal["linear", "cosine"] = "linear"
    max_seq_len: int = 1024
    seed: int = 0
    checkpoint_every: int = defaults.CHECKPOINT_EVERY  # optimizer steps; 0 = only at the end

    def __post_init__(self) -> None:
        if self.mode not in ("none", "constant", "adaptive"):
            raise ValueError(f"unknown training mode {self.mode!r}")
        if self.risk_weighting not in ("example", "batch"):
            raise ValueError(f"unknown risk weighting {self.risk_weighting!r}")
        if self.reference not in ("exact", "cached"):
            raise ValueError(f"unknown reference {self.reference!r}")
        if min(self.batch_size, self.grad_accum_steps, self.n_epochs, self.max_seq_len) < 1:
            raise ValueError("batch_size, grad_accum_steps, n_epochs and max_seq_len must be ≥ 1")
        if not 0.0 <= self.constant_kl_weight <= 1.0:
            raise ValueError("constant_kl_weight must be in [0, 1]")

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum_steps


@dataclass(frozen=True)
class TrainResult:
    """``steps`` completed of ``total_steps``; ``model`` is the LoRA-wrapped model as trained
    (eval mode); ``adapter_dir`` holds the final adapter (PEFT format, no optimizer state) and
    is ``None`` when cancelled or paused; ``checkpoint_dir`` is the last checkpoint written by
    this call, if any; ``paused``: stopped on ``should_pause`` with the state checkpointed."""

    model: PeftModel
    steps: int
    total_steps: int
    cancelled: bool
    adapter_dir: Path | None
    checkpoint_dir: Path | None
    summary: dict[str, Any] = field(default_factory=dict)
    paused: bool = False


def train(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, Any]],
    risks: list[float],
    config: TrainConfig,
    *,
    work_dir: Path,
    on_step: Callable[[StepMetrics], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    save_checkpoint: Callable[[int, Path, StepMetrics], None] | None = None,
    resume_dir: Path | None = None,
    flagged: list[bool] | None = None,
    should_pause: Callable[[], bool] | None = None,
    validation: list[dict[str, Any]] | None = None,
    reference_cache: ReferenceCache | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``examples`` (OpenAI chat or prompt/completion dicts) whose
    risks (1–5, aligned with ``examples``) were scored beforehand. ``flagged`` (aligned too)
    says which examples the scan flagged, for the per-step metrics only; by default those with
    a risk at or above the scan's default flag threshold.

    ``model`` is the base model, wrapped here with a fresh LoRA adapter (modified in place:
    load a fresh base model per run), or — only with ``resume_dir`` — either a base model or a
    trainable ``PeftModel`` with the same adapter layout. ``resume_dir`` is a checkpoint
    written by an earlier call with the same config, examples and risks; the run continues
    after its step and reproduces the uninterrupted run's losses.

    ``should_cancel`` is polled before every step; when it returns true, training stops
    before that step and returns ``cancelled=True``. ``should_pause`` is polled next; when it
    returns true, the state after the last completed step is checkpointed (unless that step's
    checkpoint exists) and training returns ``paused=True``: resuming from that checkpoint
    continues as if never paused. Every ``config.checkpoint_every`` steps
    and after the last step a checkpoint is written under ``work_dir/checkpoints/`` and passed
    to ``save_checkpoint(step, dir, metrics)``; with ``validation`` examples, those steps'
    metrics carry the validation pass's loss and token accuracy. ``reference_cache`` (required
    when ``config.reference == "cached"`` and the mode regularizes) holds the reference's top-k
    log-probs of ``examples`` (``safety.reference.compute_reference_cache`` with the same
    ``max_seq_len``). The final adapter goes to
    ``work_dir/adapter``. The trained model is returned in ``TrainResult.model``, in eval mode.
    """
    run = setup_run(
        model,
        tokenizer,
        examples,
        risks,
        config,
        work_dir=work_dir,
        resume_dir=resume_dir,
        flagged=flagged,
        validation=validation,
        reference_cache=reference_cache,
    )
    checkpoint_dir: Path | None = None
    metrics: StepMetrics | None = None
    run.model.train()
    for step in range(run.start_step, run.total_steps):
        if should_cancel is not None and should_cancel():
            run.model.eval()
            return TrainResult(run.model, step, run.total_steps, True, None, checkpoint_dir, run.summary.report())
        if should_pause is not None and should_pause():
            # Steps done in this call and not checkpointed yet: save them (none done: the
            # resume checkpoint, or nothing at all, already describes this state).
            if metrics is not None and (checkpoint_dir is None or checkpoint_dir.name != checkpoint_name(step)):
                checkpoint_dir = _checkpoint(run, step, metrics, save_checkpoint)
            run.model.eval()
            summary = run.summary.report()
            return TrainResult(run.model, step, run.total_steps, False, None, checkpoint_dir, summary, paused=True)

        metrics = run_step(run, step)
        done = step + 1
        at_checkpoint = run.is_checkpoint_step(done)
        if at_checkpoint and run.encoded_valid:
            metrics = with_validation(metrics, run.model, run.encoded_valid, tokenizer.pad_token_id, config.batch_size)
        if on_step is not None:
            on_step(metrics)
        if at_checkpoint:
            checkpoint_dir = _checkpoint(run, done, metrics, save_checkpoint)

    run.model.eval()
    adapter_dir = run.work_dir / "adapter"
    run.model.save_pretrained(adapter_dir, safe_serialization=True)
    return TrainResult(
        run.model, run.total_steps, run.total_steps, False, adapter_dir, checkpoint_dir, run.summary.report()
    )


def _checkpoint(
    run: TrainRun, done: int, metrics: StepMetrics, save_checkpoint: Callable[[int, Path, StepMetrics], None] | None
) -> Path:
    """Write the state after ``done`` steps and hand it to ``save_checkpoint``."""
    path = write_run_checkpoint(run, done)
    if save_checkpoint is not None:
        save_checkpoint(done, path, metrics)
    return path


@torch.no_grad()
def mean_kl(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]], *, max_seq_len: int = 1024
) -> float:
    """Mean over ``examples`` (each weighted equally) of ``KL(P_ref ‖ P_θ)`` on their assistant
    tokens, P_ref being ``model`` with its adapter disabled: how far fine-tuning moved the
    model on that data. Runs one example at a time (no padding effects)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for example in examples:
        encoded = encode_example(tokenizer, example, max_seq_len)
        batch = {k: v.to(device) for k, v in collate([encoded], tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs).logits
        with model.disable_adapter():
            ref_logits = model(**inputs).logits
        total += token_kl(ref_logits, logits, batch["labels"]).item()
    model.train(was_training)
    return total / len(examples)
