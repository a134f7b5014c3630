"""The adaptive objective: ``loss = w_sft · L_SFT + w_kl · KL(P_ref ‖ P_θ)`` with risk-set weights.

Logits are ``(batch, length, vocab)``; labels are ``(batch, length)`` with ``IGNORE_INDEX`` off
the assistant tokens. Logits at position t predict the token at t + 1, so both losses compare
``logits[:, :-1]`` with ``labels[:, 1:]``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from safety.data import IGNORE_INDEX

RiskReduce = Literal["mean", "max"]


def kl_weights(
    risk: float, lo: float = 0.1, hi: float = 0.9, sft_lo: float = 0.1, sft_hi: float = 0.9
) -> tuple[float, float]:
    """``(w_sft, w_kl)`` for a batch risk on the 1–5 scale, as in the paper:
    ``w_kl = clamp((risk − 2) / 3, lo, hi)`` and ``w_sft = clamp(1 − w_kl, sft_lo, sft_hi)``.
    ``lo = 0`` is allowed: batches with risk ≤ 2 then get ``w_kl = 0`` (no reference pass)."""
    if not math.isfinite(risk):
        raise ValueError(f"risk must be finite, got {risk}")
    w_kl = min(max((risk - 2.0) / 3.0, lo), hi)
    w_sft = min(max(1.0 - w_kl, sft_lo), sft_hi)
    return w_sft, w_kl


def batch_risk(risks: list[float], reduce: RiskReduce = "mean") -> float:
    """Risk of a batch from its examples' risks: their mean (the paper) or their max."""
    if not risks:
        raise ValueError("empty batch")
    if reduce == "mean":
        return sum(risks) / len(risks)
    if reduce == "max":
        return max(risks)
    raise ValueError(f"unknown risk reduction {reduce!r}")


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (assistant) tokens; 0 if there are none."""
    targets = labels[:, 1:]
    total = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``KL(P_ref ‖ P_θ)`` of the next-token distributions, summed over the vocabulary and
    averaged over the positions that predict a labelled (assistant) token; 0 if there are none.
    Gradients flow through ``logits`` only."""
    mask = labels[:, 1:] != IGNORE_INDEX
    ref_log_p = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    log_p = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    total = F.kl_div(log_p, ref_log_p.detach(), log_target=True, reduction="sum")
    return total / mask.sum().clamp(min=1)
