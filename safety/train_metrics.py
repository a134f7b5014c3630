"""What a training step reports (:class:`StepMetrics`, the ``metrics`` events' source) and
what a run adds up over its steps (:class:`RunSummary`, the safety report's training section).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step did. ``step`` and ``epoch`` count from 1. ``loss`` is the
    step's objective; ``sft_loss`` and ``kl`` are unweighted means over its answer tokens
    (``kl`` over those of micro-batches that ran the reference pass; ``None`` if none did;
    with ``reference="cached"`` it is the cached, lower-bound KL).
    ``kl_weight``/``sft_weight`` are the means over the step's examples; ``kl_weight_flagged``
    and ``kl_weight_unflagged`` the mean ``w_kl`` of its flagged / unflagged examples
    (``None`` when it has none). ``risk`` is the ``risk_reduce`` of the examples' risks.
    ``tokens`` counts non-padding input tokens. ``lr`` is the rate the step ran at (the
    schedule's, times the step's SFT budget under ``objective="bounded"``). ``train_accuracy`` is the step's token
    accuracy (from the training logits); ``valid_loss`` / ``valid_accuracy`` are set on
    checkpoint steps of a run with validation examples (``safety.validation``).

    A ``dpo`` step (``safety.dpo``) reports its pairs: ``sft_loss`` is their unweighted mean
    DPO loss (the term in SFT's cross-entropy's place), ``kl`` is over the preferred answers,
    ``reward_margin`` the mean margin and ``reward_accuracy`` the share of pairs whose
    preferred answer the policy favours more than the reference does; ``train_accuracy`` is
    ``None``, and ``valid_loss`` / ``valid_accuracy`` are the validation pairs' DPO loss and
    reward accuracy."""

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
    reward_margin: float | None = None
    reward_accuracy: float | None = None


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


def _ratio(total: float, n: int) -> float | None:
    return total / n if n else None
