"""One optimizer step of ``safety.trainer.train``, and what it reports.

:func:`run_step` takes step ``step``'s examples (``train_state.step_indices``: a slice of a
seeded per-epoch shuffle, a pure function of ``(seed, epoch)`` so a resumed run sees the
same batches), gives each its ``(w_sft, w_kl)`` (:func:`example_weights`), accumulates
the gradient of the weighted objective over micro-batches (:func:`accumulate_gradients`:
at most ``batch_size`` examples and ``micro_batch_tokens`` padded tokens each, normalised by
the step's answer tokens so the split changes nothing but memory; under ``torchrun`` each
rank takes its shard of the step's examples and the ranks' gradients are summed,
``safety.distributed``; the reference pass runs in
``safety.reference.reference_forward``, or comes from the reference cache), clips it, steps the optimizer (at the schedule's learning rate, scaled by
the step's SFT budget under ``objective="bounded"``: :func:`lr_scale`) and the LR schedule,
adds the step to the run's ``RunSummary`` and returns its ``StepMetrics``
(``safety.train_metrics``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.jobs.vocab import Objective, RiskWeighting, SafetyMode
from safety import distributed
from safety.batching import token_batches
from safety.data import IGNORE_INDEX, EncodedExample, collate
from safety.memory import autocast
from safety.objective import (
    ReferenceTopK,
    answer_inputs,
    batch_risk,
    example_sums,
    kl_weights,
    sft_budget,
    weighted_loss,
)
from safety.reference import reference_forward
from safety.train_config import TrainConfig
from safety.train_metrics import StepMetrics
from safety.train_state import TrainRun, step_indices
from safety.validation import token_accuracy_counts, validation_pass


@dataclass
class StepSums:
    """One step's sums over its micro-batches (:func:`accumulate_gradients`): each example's
    answer-token count (``example_answer_tokens``, in step order); the objective
    ``loss``; the cross-entropy ``ce`` over its ``answer_tokens``; the KL ``kl`` over
    ``kl_tokens``, the answer tokens of micro-batches with a reference pass; input ``tokens``
    (non-padding); and the ``correct`` / ``labelled`` next-token counts of the training
    logits."""

    example_answer_tokens: list[int]
    loss: float = 0.0
    ce: float = 0.0
    kl: float = 0.0
    kl_tokens: int = 0
    tokens: int = 0
    correct: int = 0
    labelled: int = 0

    @property
    def answer_tokens(self) -> int:
        return sum(self.example_answer_tokens)

    @property
    def sft_loss(self) -> float:
        """Mean cross-entropy per answer token (0 without any)."""
        return self.ce / max(self.answer_tokens, 1)

    @property
    def mean_kl(self) -> float | None:
        """Mean KL per answer token of the micro-batches with a reference pass; ``None`` if none had one."""
        return self.kl / self.kl_tokens if self.kl_tokens else None

    @property
    def train_accuracy(self) -> float:
        """Token accuracy of the training logits (0 without labelled tokens)."""
        return self.correct / max(self.labelled, 1)


def run_step(run: TrainRun, step: int) -> StepMetrics:
    """Optimizer step ``step`` (0-based) of ``run``; counted in ``run.summary``."""
    config, risks, flagged = run.config, run.risks, run.flagged
    started = time.perf_counter()
    indices = step_indices(len(risks), config.examples_per_step, config.seed, step)
    weights = example_weights(config, [risks[i] for i in indices])
    answer_tokens = [count_answer_tokens(run.encoded[i]) for i in indices]
    refs = run.cache.rows if run.cache is not None else None
    mine = distributed.world().shard(len(indices))
    sums = accumulate_gradients(
        run.model,
        run.tokenizer,
        run.encoded,
        indices[mine],
        weights[mine],
        config.batch_size,
        refs,
        config.micro_batch_tokens,
        step_answer_tokens=sum(answer_tokens),
    )
    sums = replace(distributed.summed(sums), example_answer_tokens=answer_tokens)

    lr = optimizer_step(run, weights, answer_tokens)
    elapsed = time.perf_counter() - started
    metrics = StepMetrics(
        **step_fields(run, step, indices, weights),
        loss=sums.loss,
        sft_loss=sums.sft_loss,
        kl=sums.mean_kl,
        tokens=sums.tokens,
        tokens_per_s=sums.tokens / elapsed if elapsed > 0 else 0.0,
        lr=lr,
        train_accuracy=sums.train_accuracy,
    )
    run.summary.add(metrics, [w for _, w in weights], [flagged[i] for i in indices])
    return metrics


def optimizer_step(run: TrainRun, weights: list[tuple[float, float]], answer_tokens: list[int]) -> float:
    """Sum the ranks' accumulated gradients (``distributed.sum_gradients``; one process: as
    is), clip the sum, step the optimizer at the schedule's rate times :func:`lr_scale` of the
    step's ``weights`` and ``answer_tokens``, step the schedule and clear the gradient; the
    rate the step ran at."""
    distributed.sum_gradients(run.trainable)
    torch.nn.utils.clip_grad_norm_(run.trainable, run.config.max_grad_norm)
    scale = lr_scale(run.config, weights, answer_tokens)
    lr: float = run.scheduler.get_last_lr()[0] * scale
    with scaled_lr(run.optimizer, scale):
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return lr


def step_fields(run: TrainRun, step: int, indices: list[int], weights: list[tuple[float, float]]) -> dict[str, Any]:
    """The ``StepMetrics`` fields of step ``step`` that its examples and their weights give
    (counters, mean weights, risk), whatever the objective."""
    config, risks, flagged = run.config, run.risks, run.flagged
    w_sft = [w for w, _ in weights]
    w_kl = [w for _, w in weights]
    return {
        "step": step + 1,
        "total_steps": run.total_steps,
        "epoch": step // run.steps_per_epoch + 1,
        "kl_weight": sum(w_kl) / len(w_kl),  # a step has examples: never empty
        "sft_weight": sum(w_sft) / len(w_sft),
        "risk": batch_risk([risks[i] for i in indices], config.risk_reduce),
        "kl_weight_flagged": _mean([w for w, i in zip(w_kl, indices) if flagged[i]]),
        "kl_weight_unflagged": _mean([w for w, i in zip(w_kl, indices) if not flagged[i]]),
    }


def with_validation(metrics: StepMetrics, run: TrainRun) -> StepMetrics:
    """``metrics`` with the loss and token accuracy of ``run``'s validation pass, batched as
    its micro-batches."""
    config = run.config
    result = validation_pass(
        run.model, run.encoded_valid, run.tokenizer.pad_token_id, config.batch_size, config.micro_batch_tokens
    )
    return replace(metrics, valid_loss=result.loss, valid_accuracy=result.mean_token_accuracy)


def loss_weights(config: TrainConfig, risk: float) -> tuple[float, float]:
    """``(w_sft, w_kl)`` of risk ``risk`` under ``config.mode`` (and, ``adaptive``, its ``objective``)."""
    if config.mode == SafetyMode.NONE:
        return 1.0, 0.0
    if config.mode == SafetyMode.CONSTANT:
        return 1.0 - config.constant_kl_weight, config.constant_kl_weight
    cutoff = config.sft_cutoff_risk if config.objective == Objective.BOUNDED else math.inf
    return kl_weights(
        risk, config.kl_weight_min, config.kl_weight_max, config.sft_weight_min, config.sft_weight_max, cutoff
    )


def lr_scale(config: TrainConfig, weights: list[tuple[float, float]], answer_tokens: list[int]) -> float:
    """The factor on a step's learning rate: its SFT budget (``objective.sft_budget`` of the
    examples' ``(w_sft, w_kl)`` and answer tokens) for ``adaptive`` under ``bounded``, else 1
    (``none`` and ``constant`` are the baselines ``bounded`` is measured against)."""
    if config.mode != SafetyMode.ADAPTIVE or config.objective != Objective.BOUNDED:
        return 1.0
    return sft_budget([w for w, _ in weights], answer_tokens)


@contextmanager
def scaled_lr(optimizer: torch.optim.Optimizer, scale: float) -> Iterator[None]:
    """Within the block, every param group's learning rate times ``scale``; restored after, so
    the schedule and the checkpointed optimizer state see the schedule's own rate."""
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] *= scale
    try:
        yield
    finally:
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate


def example_weights(config: TrainConfig, risks: list[float]) -> list[tuple[float, float]]:
    """``(w_sft, w_kl)`` of each example of a step: from its own risk, or (``"batch"``) all
    from the step's ``risk_reduce`` of the risks."""
    if config.risk_weighting == RiskWeighting.BATCH:
        return [loss_weights(config, batch_risk(risks, config.risk_reduce))] * len(risks)
    return [loss_weights(config, risk) for risk in risks]


def accumulate_gradients(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: list[EncodedExample],
    indices: list[int],
    weights: list[tuple[float, float]],
    batch_size: int,
    cached_rows: Callable[[list[int]], ReferenceTopK] | None = None,
    max_tokens: int | None = None,
    *,
    step_answer_tokens: int | None = None,
) -> StepSums:
    """Forward and backward the step's examples (``encoded[i]`` for ``i`` in ``indices``) in
    micro-batches of at most ``batch_size`` examples and, with ``max_tokens``, at most that
    many padded tokens (``safety.batching.token_batches``), the reference from
    ``cached_rows`` of each micro-batch's indices when given (else its forward pass),
    accumulating the gradient of ``weighted_loss`` normalised by the *step's* answer tokens,
    so that the gradient is the one-shot gradient of the step however it is split; the
    sums of ``indices``. When ``indices`` are one rank's shard of the step
    (``safety.distributed``), ``step_answer_tokens`` is the whole step's count (default: the
    answer tokens of ``indices``)."""
    device = next(model.parameters()).device
    examples = [encoded[i] for i in indices]
    sums = StepSums(example_answer_tokens=[count_answer_tokens(e) for e in examples])
    n_answer = sums.answer_tokens if step_answer_tokens is None else step_answer_tokens
    for micro in token_batches([len(e.input_ids) for e in examples], max_tokens, batch_size):
        w_sft, w_kl = torch.tensor([weights[p] for p in micro], device=device).unbind(-1)
        batch = {k: v.to(device) for k, v in collate([examples[p] for p in micro], tokenizer.pad_token_id).items()}
        inputs, labels = answer_inputs(batch)
        ref_logits = ref_topk = None
        if bool((w_kl > 0).any()):
            if cached_rows is not None:
                ref_topk = cached_rows([indices[p] for p in micro])
            else:
                with reference_forward(model), autocast(device):
                    ref_logits = model(**inputs).logits
        with autocast(device):
            logits = model(**inputs).logits
        ce, kl, answer_tokens = example_sums(logits, labels, ref_logits, ref_topk)
        correct, labelled = token_accuracy_counts(logits.detach(), labels)
        sums.correct += correct
        sums.labelled += labelled
        loss = weighted_loss(ce, kl, w_sft, w_kl, n_answer)
        loss.backward()
        sums.loss += loss.item()
        sums.ce += ce.sum().item()
        if kl is not None:
            sums.kl += kl.sum().item()
            sums.kl_tokens += int(answer_tokens.sum())
        sums.tokens += int(batch["attention_mask"].sum())
    return sums


def count_answer_tokens(example: EncodedExample) -> int:
    """The number of answer (labelled) tokens an example's logits predict."""
    return sum(label != IGNORE_INDEX for label in example.labels[1:])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
