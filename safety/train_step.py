"""One optimizer step of ``safety.trainer.train``, and what it reports.

:func:`run_step` takes step ``step``'s examples (:func:`step_indices`: a slice of a
seeded per-epoch shuffle, a pure function of ``(seed, epoch)`` so a resumed run sees the
same batches), gives each its ``(w_sft, w_kl)`` (:func:`example_weights`), accumulates
the gradient of the weighted objective over micro-batches (:func:`accumulate_gradients`:
the reference pass runs under ``torch.no_grad`` with the LoRA adapter disabled, or comes
from the reference cache), clips it, steps the optimizer and the LR schedule, adds the
step to the run's :class:`RunSummary` and returns its :class:`StepMetrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from safety.data import IGNORE_INDEX, EncodedExample, collate
from safety.objective import (
    ReferenceTopK,
    batch_risk,
    example_sums,
    kl_weights,
    weighted_loss,
)
from safety.validation import token_accuracy_counts, validation_pass

if TYPE_CHECKING:
    from safety.train_state import TrainRun
    from safety.trainer import TrainConfig


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step did. ``step`` and ``epoch`` count from 1. ``loss`` is the
    step's objective; ``sft_loss`` and ``kl`` are unweighted means over its answer tokens
    (``kl`` over those of micro-batches that ran the reference pass; ``None`` if none did;
    with ``reference="cached"`` it is the cached, lower-bound KL).
    ``kl_weight``/``sft_weight`` are the means over the step's examples; ``kl_weight_flagged``
    and ``kl_weight_unflagged`` the mean ``w_kl`` of its flagged / unflagged examples
    (``None`` when it has none). ``risk`` is the ``risk_reduce`` of the examples' risks.
    ``tokens`` counts non-padding input tokens. ``train_accuracy`` is the step's token
    accuracy (from the training logits); ``valid_loss`` / ``valid_accuracy`` are set on
    checkpoint steps of a run with validation examples (``safety.validation``)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    sft_loss: float
    kl: float | None
    kl_weight: float
    sft_weight: float
    risk: float
    kl_weight_flagged: float | None
    kl_weight_unflagged: float | None
    tokens: int
    tokens_per_s: float
    lr: float
    train_accuracy: float | None = None
    valid_loss: float | None = None
    valid_accuracy: float | None = None


@dataclass
class RunSummary:
    """Running totals over completed steps (kept in checkpoints so resumed runs report the
    same summary as uninterrupted ones)."""

    steps: int = 0
    risk_sum: float = 0.0
    regularized_steps: int = 0
    loss_sum: float = 0.0
    trained_tokens: int = 0
    final_kl: float | None = None
    flagged_kl_weight_sum: float = 0.0
    flagged_examples: int = 0
    unflagged_kl_weight_sum: float = 0.0
    unflagged_examples: int = 0

    def add(self, metrics: StepMetrics, kl_weights: list[float], flagged: list[bool]) -> None:
        """Count a completed step whose examples had ``kl_weights`` and scan flags ``flagged``."""
        for w_kl, is_flagged in zip(kl_weights, flagged, strict=True):
            if is_flagged:
                self.flagged_kl_weight_sum += w_kl
                self.flagged_examples += 1
            else:
                self.unflagged_kl_weight_sum += w_kl
                self.unflagged_examples += 1
        self.steps += 1
        self.risk_sum += metrics.risk
        self.regularized_steps += metrics.kl_weight > 0
        self.loss_sum += metrics.loss
        self.trained_tokens += metrics.tokens
        if metrics.kl is not None:
            self.final_kl = metrics.kl

    def report(self) -> dict[str, Any]:
        """``mean_risk``, ``regularized_share`` (steps with ``w_kl > 0``), ``final_kl`` (last
        measured; ``None`` if never), ``mean_loss``, ``trained_tokens``, ``steps``, and
        ``mean_kl_weight_flagged`` / ``_unflagged``: the mean ``w_kl`` at which flagged /
        unflagged examples were trained, over every time one was (``None`` if never)."""
        n = max(self.steps, 1)
        return {
            "mean_risk": self.risk_sum / n,
            "regularized_share": self.regularized_steps / n,
            "final_kl": self.final_kl,
            "mean_loss": self.loss_sum / n,
            "trained_tokens": self.trained_tokens,
            "steps": self.steps,
            "mean_kl_weight_flagged": _ratio(self.flagged_kl_weight_sum, self.flagged_examples),
            "mean_kl_weight_unflagged": _ratio(self.unflagged_kl_weight_sum, self.unflagged_examples),
        }


def step_indices(n_examples: int, examples_per_step: int, seed: int, step: int) -> list[int]:
    """Example indices of optimizer step ``step`` (0-based): its slice of its epoch's
    shuffle, which is a pure function of ``(seed, epoch)``."""
    steps_per_epoch = -(-n_examples // examples_per_step)
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    start = step_in_epoch * examples_per_step
    return order[start : start + examples_per_step].tolist()


def run_step(run: TrainRun, step: int) -> StepMetrics:
    """Optimizer step ``step`` (0-based) of ``run``; counted in ``run.summary``."""
    config, risks, flagged = run.config, run.risks, run.flagged
    started = time.perf_counter()
    indices = step_indices(len(run.encoded), config.examples_per_step, config.seed, step)
    weights = example_weights(config, [risks[i] for i in indices])
    refs = run.cache.rows if run.cache is not None else None
    sums = accumulate_gradients(run.model, run.tokenizer, run.encoded, indices, weights, config.batch_size, refs)

    torch.nn.utils.clip_grad_norm_(run.trainable, config.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    elapsed = time.perf_counter() - started
    w_sft = [w for w, _ in weights]
    w_kl = [w for _, w in weights]
    metrics = StepMetrics(
        step=step + 1,
        total_steps=run.total_steps,
        epoch=step // run.steps_per_epoch + 1,
        loss=sums["loss"],
        sft_loss=sums["ce"] / max(sums["answer_tokens"], 1),
        kl=sums["kl"] / sums["kl_tokens"] if sums["kl_tokens"] else None,
        kl_weight=_mean(w_kl),
        sft_weight=_mean(w_sft),
        risk=batch_risk([risks[i] for i in indices], config.risk_reduce),
        kl_weight_flagged=_mean([w for w, i in zip(w_kl, indices) if flagged[i]]),
        kl_weight_unflagged=_mean([w for w, i in zip(w_kl, indices) if not flagged[i]]),
        tokens=sums["tokens"],
        tokens_per_s=sums["tokens"] / elapsed if elapsed > 0 else 0.0,
        lr=lr,
        train_accuracy=sums["correct"] / max(sums["labelled"], 1),
    )
    run.summary.add(metrics, w_kl, [flagged[i] for i in indices])
    return metrics


def with_validation(
    metrics: StepMetrics, model: PeftModel, encoded: list[EncodedExample], pad_token_id: int, batch_size: int
) -> StepMetrics:
    """``metrics`` with the validation pass's loss and token accuracy."""
    result = validation_pass(model, encoded, pad_token_id, batch_size)
    return replace(metrics, valid_loss=result.loss, valid_accuracy=result.mean_token_accuracy)


def loss_weights(config: TrainConfig, risk: float) -> tuple[float, float]:
    """``(w_sft, w_kl)`` of risk ``risk`` under ``config.mode``."""
    if config.mode == "none":
        return 1.0, 0.0
    if config.mode == "constant":
        return 1.0 - config.constant_kl_weight, config.constant_kl_weight
    return kl_weights(risk, config.kl_lo, config.kl_hi, config.sft_lo, config.sft_hi)


def example_weights(config: TrainConfig, risks: list[float]) -> list[tuple[float, float]]:
    """``(w_sft, w_kl)`` of each example of a step: from its own risk, or (``"batch"``) all
    from the step's ``risk_reduce`` of the risks."""
    if config.risk_weighting == "batch":
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
) -> dict[str, float]:
    """Forward and backward the step's examples (``encoded[i]`` for ``i`` in ``indices``) in
    micro-batches of ``batch_size``, the reference from ``cached_rows(indices)`` when given
    (else its forward pass), accumulating the gradient of ``weighted_loss`` normalised by the step's answer tokens.
    Returns the step's sums: ``loss``, ``ce``, ``kl`` (over ``kl_tokens``, the answer tokens
    of micro-batches with a reference pass), ``answer_tokens``, input ``tokens``, and the
    ``correct`` / ``labelled`` next-token counts of the training logits (token accuracy)."""
    device = next(model.parameters()).device
    examples = [encoded[i] for i in indices]
    n_answer = sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples)
    sums = {
        "loss": 0.0,
        "ce": 0.0,
        "kl": 0.0,
        "kl_tokens": 0,
        "answer_tokens": n_answer,
        "tokens": 0,
        "correct": 0,
        "labelled": 0,
    }
    for start in range(0, len(examples), batch_size):
        micro = examples[start : start + batch_size]
        w_sft, w_kl = torch.tensor(weights[start : start + batch_size], device=device).unbind(-1)
        batch = {k: v.to(device) for k, v in collate(micro, tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        ref_logits = ref_topk = None
        if bool((w_kl > 0).any()):
            if cached_rows is not None:
                ref_topk = cached_rows(indices[start : start + batch_size])
            else:
                with torch.no_grad(), model.disable_adapter(), autocast(device):
                    ref_logits = model(**inputs).logits
        with autocast(device):
            logits = model(**inputs).logits
        ce, kl, answer_tokens = example_sums(logits, batch["labels"], ref_logits, ref_topk)
        correct, labelled = token_accuracy_counts(logits.detach(), batch["labels"])
        sums["correct"] += correct
        sums["labelled"] += labelled
        loss = weighted_loss(ce, kl, w_sft, w_kl, n_answer)
        loss.backward()
        sums["loss"] += loss.item()
        sums["ce"] += ce.sum().item()
        if kl is not None:
            sums["kl"] += kl.sum().item()
            sums["kl_tokens"] += int(answer_tokens.sum())
        sums["tokens"] += int(batch["attention_mask"].sum())
    return sums


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (fp32 weights and LoRA, bf16 matmuls); nothing elsewhere. The
    losses are computed in fp32 either way (``objective`` upcasts the logits)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _mean(values: list[float]) -> float | None:
    return _ratio(sum(values), len(values))


def _ratio(total: float, n: int) -> float | None:
    return total / n if n else None
