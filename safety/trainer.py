"""LoRA fine-tuning with the risk-adaptive KL objective, as one explicit training loop.

Each optimizer step takes the next ``batch_size × grad_accum_steps`` examples of a
seeded per-epoch shuffle, turns each example's pre-computed risk (1–5) into its own loss
weights (``risk_weighting="example"``, the default; ``"batch"`` gives every example the
weights of the batch's mean risk, the paper's code as an ablation), and minimises
``Σ_i [w_sft_i · CE_i + w_kl_i · KL_i] / N`` (``objective.weighted_loss``; under
``objective="bounded"`` w_sft is 0 at flagged risks and the step's learning rate is scaled by
its SFT budget, ``safety.objective``'s departure from the paper). The reference
policy P_ref is the same model with the LoRA adapter disabled; with ``reference="exact"`` its
forward pass runs every micro-batch (skipped when all its examples have ``w_kl == 0``); with
``reference="cached"`` it never runs here: the KL is taken against the reference's top-k
log-probabilities computed once beforehand (``safety.reference``, a lower bound of the exact
KL). Everything the worker needs to report, checkpoint, cancel and resume goes through
``train``'s arguments; nothing here knows about databases or queues.

:func:`train` is the loop, read top to bottom in the manner of torchtune's recipes:
its config and result (``safety.train_config``), setup (``safety.train_state.setup_run``:
data, LoRA, optimizer, schedule, resume), then
per step the cancel / pause checks, the step itself (``safety.train_step.run_step``), the
validation pass and the checkpoint (``safety.train_state.write_run_checkpoint``) on
checkpoint steps; no callbacks other than ``train``'s own arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from safety import distributed
from safety.checkpoints import save_adapter
from safety.data import collate, encode_example
from safety.dpo import run_dpo_step, with_preference_validation
from safety.objective import token_kl
from safety.reference import ReferenceCache, reference_forward
from safety.train_config import TrainConfig, TrainOutcome, TrainResult
from safety.train_metrics import StepMetrics
from safety.train_state import (
    TrainRun,
    checkpoint_name,
    setup_run,
    write_run_checkpoint,
)
from safety.train_step import run_step, with_validation


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
    init_adapter: Path | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``examples`` (OpenAI chat or prompt/completion dicts; under
    ``config.method="dpo"`` preference pairs, trained by ``safety.dpo``, ``validation`` pairs
    too) whose risks (1–5, aligned with ``examples``) were scored beforehand. ``flagged`` (aligned too)
    says which examples the scan flagged, for the per-step metrics only; by default those with
    a risk at or above the scan's default flag threshold.

    ``model`` is the base model, wrapped here with a fresh LoRA adapter (modified in place:
    load a fresh base model per run) or, with ``init_adapter`` (a saved PEFT adapter of this
    base: continued training), a trainable copy of that adapter; either way the reference
    (adapter disabled) is the base model itself. Or — only with ``resume_dir`` — either a base model or a
    trainable ``PeftModel`` with the same adapter layout. ``resume_dir`` is a checkpoint
    written by an earlier call with the same config, examples and risks; the run continues
    after its step and reproduces the uninterrupted run's losses.

    ``should_cancel`` is polled before every step; when it returns true, training stops
    before that step and returns outcome ``cancelled``. ``should_pause`` is polled next; when
    it returns true, the state after the last completed step is checkpointed (unless that
    step's checkpoint exists) and training returns outcome ``paused``: resuming from that
    checkpoint continues as if never paused. Every ``config.checkpoint_every`` steps and
    after the last step a checkpoint is written under ``work_dir/checkpoints/`` and passed
    to ``save_checkpoint(step, dir, metrics)``; with ``validation`` examples, those steps'
    metrics carry the validation pass's loss and token accuracy. ``reference_cache`` (required
    when ``config.reference`` is ``cached`` and the mode regularizes) holds the reference's top-k
    log-probs of ``examples`` (``safety.reference.compute_reference_cache`` with the same
    ``max_seq_len``). The final adapter goes to
    ``work_dir/adapter``. The trained model is returned in ``TrainResult.model``, in eval mode.

    Under ``torchrun`` (``safety.distributed``: every rank calls ``train`` with the same
    arguments) each step's examples are split between the ranks and their gradients summed:
    the same steps as one process at the same ``batch_size``, within float rounding (LoRA
    dropout aside, whose masks follow the split). Rank 0 alone polls ``should_cancel`` and
    ``should_pause`` (every rank follows its answer), runs the validation pass, calls
    ``on_step`` and ``save_checkpoint``, writes the checkpoints and the adapter
    (``TrainResult.adapter_dir`` is ``None`` on the other ranks); all ranks resume from the
    same ``resume_dir``.
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
        init_adapter=init_adapter,
    )
    checkpoint_dir: Path | None = None
    metrics: StepMetrics | None = None
    dpo = config.method == "dpo"
    main = distributed.world().is_main
    run.model.train()
    for step in range(run.start_step, run.total_steps):
        if distributed.main_decides(should_cancel):
            return _stopped(run, TrainOutcome.CANCELLED, step, checkpoint_dir)
        if distributed.main_decides(should_pause):
            # Steps done in this call and not checkpointed yet: save them (none done: the
            # resume checkpoint, or nothing at all, already describes this state).
            if metrics is not None and (checkpoint_dir is None or checkpoint_dir.name != checkpoint_name(step)):
                checkpoint_dir = _checkpoint(run, step, metrics, save_checkpoint)
            return _stopped(run, TrainOutcome.PAUSED, step, checkpoint_dir)

        metrics = run_dpo_step(run, step) if dpo else run_step(run, step)
        done = step + 1
        at_checkpoint = run.is_checkpoint_step(done)
        if at_checkpoint and run.encoded_valid and main:
            metrics = with_preference_validation(metrics, run) if dpo else with_validation(metrics, run)
        if on_step is not None and main:
            on_step(metrics)
        if at_checkpoint:
            checkpoint_dir = _checkpoint(run, done, metrics, save_checkpoint)

    run.model.eval()
    adapter_dir = run.work_dir / "adapter" if main else None
    if adapter_dir is not None:
        save_adapter(run.model, adapter_dir)
    return TrainResult(
        model=run.model,
        outcome=TrainOutcome.COMPLETED,
        steps=run.total_steps,
        total_steps=run.total_steps,
        adapter_dir=adapter_dir,
        checkpoint_dir=checkpoint_dir,
        summary=run.summary.report(),
    )


def _stopped(run: TrainRun, outcome: TrainOutcome, steps: int, checkpoint_dir: Path | None) -> TrainResult:
    """The result of a run stopped (cancelled or paused) after ``steps`` steps: no adapter,
    the model in eval mode."""
    run.model.eval()
    return TrainResult(
        model=run.model,
        outcome=outcome,
        steps=steps,
        total_steps=run.total_steps,
        adapter_dir=None,
        checkpoint_dir=checkpoint_dir,
        summary=run.summary.report(),
    )


def _checkpoint(
    run: TrainRun, done: int, metrics: StepMetrics, save_checkpoint: Callable[[int, Path, StepMetrics], None] | None
) -> Path:
    """Write the state after ``done`` steps (every rank takes part, rank 0 writes) and hand it
    to ``save_checkpoint`` (rank 0)."""
    path = write_run_checkpoint(run, done)
    if save_checkpoint is not None and distributed.world().is_main:
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
        with reference_forward(model):
            ref_logits = model(**inputs).logits
        total += token_kl(ref_logits, logits, batch["labels"]).item()
    model.train(was_training)
    return total / len(examples)
