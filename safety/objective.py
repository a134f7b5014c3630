"""The adaptive objective: ``loss = w_sft · L_SFT + w_kl · KL(P_ref ‖ P_θ)`` with risk-set weights.

Per-example form (guardtune's default, ``weighted_loss``): every example i of a batch gets
its own weights from its own risk r_i, and

    loss = Σ_i [w_sft(r_i) · CE_i + w_kl(r_i) · KL_i] / N

where CE_i and KL_i are example i's cross-entropy and ``KL(P_ref ‖ P_θ)`` *summed* over its
answer (labelled) tokens and N is the number of answer tokens in the whole batch (all
micro-batches of one optimizer step). For a batch of one this is exactly the paper's
``w_sft · mean-token CE + w_kl · mean-token KL``; with equal weights (the paper's batch-mean
risk, ``risk_weighting="batch"``) it is the same formula over the batch's tokens.

``objective="bounded"`` (an operator option, ``TrainConfig.objective``; the default stays
``"paper"``) departs from the paper where AdamW undoes its weights. AdamW's update is
invariant to a global scale of the loss: lowering every line's w_sft only shifts the *share*
of a step among its lines, never the step's size. So a floor weight 0.9 → 0.1 changes nothing
on a step of flagged lines (the KL gradient is zero where training starts), and one missed
line at 0.9 beside three flagged at 0.1 takes most of a full-size step. ``bounded`` changes two
things, both small:

* w_sft is 0 at risks at or above a cutoff (the scan's flag threshold, 4): ``kl_weights``'
  ``sft_cutoff``. Such a line's cross-entropy is removed, not scaled by 0.1; its KL term stays.
* The step's learning rate is multiplied by its SFT budget b (``sft_budget``): the
  answer-token-weighted mean of w_sft over the step, ≤ 1 = plain SFT's. AdamW's step has about
  the same size whatever the (steady) scale of the gradient (exactly, per coordinate, at its first step),
  so this makes the step's size follow the weights: b times a plain SFT step. A step made mostly
  of down-weighted lines takes a proportionally smaller step, where the paper hands its one
  missed line most of a full step. It bounds the step's size, not each line's share of its
  direction; on the issue's step every line is then learnt less than plain SFT learns it
  (``tests/safety/test_bounded_objective.py``). A fixed normaliser would not do it (N
  already is the step's answer tokens, and AdamW undoes any constant); a per-step cap would need
  a constant to tune. The KL term is scaled with the step: within a step AdamW splits one
  normalisation among the terms, so its pull back toward the reference keeps the share the
  step's weights give it against the cross-entropy it counters; its absolute pull shrinks with
  the budget, and a step with no SFT budget (only lines at or above the cutoff) moves nothing
  (AdamW's moments still see its gradient).

Logits are ``(batch, length, vocab)``; labels are ``(batch, length)`` with ``IGNORE_INDEX`` off
the assistant tokens. Logits at position t predict the token at t + 1, so both losses compare
``logits[:, :-1]`` with ``labels[:, 1:]``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from core.jobs.config import KL_WEIGHT_MAX, KL_WEIGHT_MIN, SFT_WEIGHT_MAX, SFT_WEIGHT_MIN
from safety.data import IGNORE_INDEX

RiskReduce = Literal["mean", "max"]


def kl_weights(
    risk: float,
    kl_weight_min: float = KL_WEIGHT_MIN,
    kl_weight_max: float = KL_WEIGHT_MAX,
    sft_weight_min: float = SFT_WEIGHT_MIN,
    sft_weight_max: float = SFT_WEIGHT_MAX,
    sft_cutoff: float = math.inf,
) -> tuple[float, float]:
    """``(w_sft, w_kl)`` for a batch risk on the 1–5 scale, as in the paper:
    ``w_kl = clamp((risk − 2) / 3, kl_weight_min, kl_weight_max)`` and
    ``w_sft = clamp(1 − w_kl, sft_weight_min, sft_weight_max)``. ``kl_weight_min = 0`` is
    allowed: batches with risk ≤ 2 then get ``w_kl = 0`` (no reference pass). At a risk at or
    above ``sft_cutoff`` (``bounded``; the paper has none) ``w_sft`` is 0, not the floor."""
    if not math.isfinite(risk):
        raise ValueError(f"risk must be finite, got {risk}")
    w_kl = min(max((risk - 2.0) / 3.0, kl_weight_min), kl_weight_max)
    w_sft = 0.0 if risk >= sft_cutoff else min(max(1.0 - w_kl, sft_weight_min), sft_weight_max)
    return w_sft, w_kl


def sft_budget(w_sft: list[float], answer_tokens: list[int]) -> float:
    """A step's SFT budget: the mean of its examples' ``w_sft`` weighted by their answer
    tokens, capped at plain SFT's 1; 1 for a step without answer tokens (it trains nothing)."""
    total = sum(answer_tokens)
    if total == 0:
        return 1.0
    return min(sum(w * n for w, n in zip(w_sft, answer_tokens, strict=True)) / total, 1.0)


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


class ReferenceTopK(NamedTuple):
    """The reference's next-token distribution at M answer positions, coarsened: its ``k``
    most likely tokens (``ids``, ``(M, k)``) with their log-probabilities (``logprobs``) and
    the log of the mass of all other tokens (``tail``, ``(M,)``; ``-inf`` when the top k hold
    all of it). Rows are in the order ``labels[:, 1:] != IGNORE_INDEX`` selects positions."""

    logprobs: torch.Tensor
    ids: torch.Tensor
    tail: torch.Tensor


def reference_topk(ref_log_p: torch.Tensor, k: int) -> ReferenceTopK:
    """The coarsened form of full reference log-probabilities ``(M, vocab)`` (float32)."""
    logprobs, ids = ref_log_p.topk(min(k, ref_log_p.shape[-1]), dim=-1)
    return ReferenceTopK(logprobs, ids, _tail_log_mass(ref_log_p, ids))


def cached_token_kl(ref: ReferenceTopK, log_p: torch.Tensor) -> torch.Tensor:
    """Per position ``(M,)``: ``KL`` of the coarsened distributions — the reference's top-k
    tokens plus one tail bucket holding every other token, against the policy's
    ``log_p`` ``(M, vocab)`` merged into the same k + 1 buckets. Merging outcomes never
    increases a KL divergence (log-sum inequality), so this is a **lower bound** of the exact
    ``KL(P_ref ‖ P_θ)``; it is equal to it when the top k cover the vocabulary (empty tail)
    and the gap is the tail's internal divergence, weighted by the tail mass."""
    ids = ref.ids.long()
    ref_lp = ref.logprobs.float()
    top = (ref_lp.exp() * (ref_lp - log_p.gather(-1, ids))).sum(-1)
    tail = ref.tail.float()
    has_tail = tail > float("-inf")
    log_q_tail = _tail_log_mass(log_p, ids, has_tail)
    tail_term = torch.where(has_tail, tail.exp() * (torch.where(has_tail, tail, 0.0) - log_q_tail), 0.0)
    return top + tail_term


def _tail_log_mass(log_p: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``log Σ_{v ∉ ids} p_v`` per row; rows not in ``rows`` (a mask) get a finite dummy."""
    rest = log_p.scatter(-1, ids, float("-inf"))
    if rows is not None:
        rest = torch.where(rows.unsqueeze(-1), rest, 0.0)
    return torch.logsumexp(rest, dim=-1)


def answer_window(labels: torch.Tensor) -> int:
    """The first position whose logits predict an answer token in some row of ``labels``
    (as :func:`example_sums` reads them: position ``t`` predicts ``labels[:, t + 1]``), 0
    without any. The logits of the positions before it are never read, so a forward may
    skip them (``logits_to_keep``) if it slices ``labels`` from the same position."""
    labelled = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return int(labelled[0]) if len(labelled) else 0


def answer_inputs(batch: dict[str, torch.Tensor]) -> tuple[dict[str, Any], torch.Tensor]:
    """A collated batch's model inputs that ask for logits only from its :func:`answer_window`
    on (``logits_to_keep``: a long prompt before a short answer costs no vocabulary-sized
    rows), and its labels sliced from the same position, as :func:`example_sums` reads them."""
    start = answer_window(batch["labels"])
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "logits_to_keep": batch["input_ids"].shape[1] - start,
    }
    return inputs, batch["labels"][:, start:]


def example_sums(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    ref_topk: ReferenceTopK | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per example (shape ``(batch,)``): cross-entropy summed over its answer tokens,
    ``KL(P_ref ‖ P_θ)`` summed over the same positions, and its number of answer tokens.
    The reference is either full ``ref_logits`` (exact KL) or a cached ``ref_topk`` with one
    row per answer position (``cached_token_kl``: a lower bound); the KL is ``None`` with
    neither. Gradients flow through ``logits`` only."""
    if ref_logits is not None and ref_topk is not None:
        raise ValueError("pass ref_logits or ref_topk, not both")
    mask = labels[:, 1:] != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)[0]
    log_p = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    token_ce = -log_p.gather(-1, labels[:, 1:][mask].unsqueeze(-1)).squeeze(-1)
    zeros = log_p.new_zeros(labels.shape[0])
    kl = None
    if ref_logits is not None:
        ref_log_p = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1).detach()
        kl = zeros.index_add(0, rows, (ref_log_p.exp() * (ref_log_p - log_p)).sum(-1))
    elif ref_topk is not None:
        if ref_topk.ids.shape[0] != log_p.shape[0]:
            raise ValueError(f"{ref_topk.ids.shape[0]} cached reference rows for {log_p.shape[0]} answer positions")
        kl = zeros.index_add(0, rows, cached_token_kl(ReferenceTopK(*(t.to(log_p.device) for t in ref_topk)), log_p))
    return zeros.index_add(0, rows, token_ce), kl, mask.sum(1)


def weighted_loss(
    ce: torch.Tensor, kl: torch.Tensor | None, w_sft: torch.Tensor, w_kl: torch.Tensor, n_tokens: int
) -> torch.Tensor:
    """``Σ_i [w_sft_i · CE_i + w_kl_i · KL_i] / n_tokens`` of per-example sums (``example_sums``);
    ``n_tokens`` is the answer-token count of the whole batch. ``kl`` may be ``None`` only
    when every ``w_kl_i`` is 0 (the reference pass was skipped)."""
    if kl is None and bool((w_kl > 0).any()):
        raise ValueError("KL sums are needed when some w_kl > 0")
    total = (w_sft * ce).sum() if kl is None else (w_sft * ce + w_kl * kl).sum()
    return total / max(n_tokens, 1)
