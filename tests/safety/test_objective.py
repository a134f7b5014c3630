"""The adaptive objective: weights, SFT loss and token KL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from safety.data import IGNORE_INDEX
from safety.objective import batch_risk, kl_weights, sft_loss, token_kl


@pytest.mark.parametrize(
    ("risk", "expected"),
    [
        (1.0, (0.9, 0.1)),  # below the lower bound: w_kl clamped up to 0.1
        (2.0, (0.9, 0.1)),
        (2.3, (0.9, 0.1)),  # (2.3 - 2) / 3 = 0.1 exactly at the bound
        (2.6, (0.8, 0.2)),
        (3.5, (0.5, 0.5)),
        (4.4, (0.2, 0.8)),
        (4.7, (0.1, 0.9)),  # exactly at the upper bound
        (5.0, (0.1, 0.9)),  # above: clamped down to 0.9
    ],
)
def test_kl_weights_follow_the_paper(risk: float, expected: tuple[float, float]) -> None:
    assert kl_weights(risk) == pytest.approx(expected)


def test_kl_weights_bounds_are_configurable() -> None:
    assert kl_weights(1.0, lo=0.0) == (0.9, 0.0)  # benign batch: no KL term at all
    assert kl_weights(2.0, lo=0.0) == (0.9, 0.0)
    assert kl_weights(5.0, lo=0.0, hi=1.0, sft_lo=0.0, sft_hi=1.0) == (0.0, 1.0)
    assert kl_weights(1.0, lo=0.0, sft_hi=1.0) == (1.0, 0.0)
    with pytest.raises(ValueError):
        kl_weights(math.nan)


def test_batch_risk() -> None:
    assert batch_risk([1.0, 5.0, 3.0]) == 3.0
    assert batch_risk([1.0, 5.0, 3.0], "max") == 5.0
    with pytest.raises(ValueError):
        batch_risk([])
    with pytest.raises(ValueError):
        batch_risk([1.0], "median")  # type: ignore[arg-type]


def _logits_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    x = IGNORE_INDEX
    labels = torch.tensor([[x, x, 3, 4, x], [x, 1, 2, x, x]])
    return logits, labels


def test_sft_loss_is_shifted_mean_cross_entropy_over_labelled_tokens() -> None:
    logits, labels = _logits_and_labels()
    # labelled tokens: (0, 2), (0, 3), (1, 1), (1, 2), predicted by positions one earlier
    expected = torch.stack(
        [F.cross_entropy(logits[b, t - 1], labels[b, t]) for b, t in [(0, 2), (0, 3), (1, 1), (1, 2)]]
    ).mean()
    assert sft_loss(logits, labels) == pytest.approx(expected.item())
    assert sft_loss(logits, torch.full_like(labels, IGNORE_INDEX)).item() == 0.0


def test_token_kl_is_forward_kl_summed_over_vocab_averaged_over_labelled_tokens() -> None:
    logits, labels = _logits_and_labels()
    ref_logits = torch.randn_like(logits)
    positions = [(0, 1), (0, 2), (1, 0), (1, 1)]
    p_ref, log_p_ref, log_p = F.softmax(ref_logits, -1), F.log_softmax(ref_logits, -1), F.log_softmax(logits, -1)
    expected = sum((p_ref[b, t] * (log_p_ref[b, t] - log_p[b, t])).sum() for b, t in positions) / len(positions)
    assert token_kl(ref_logits, logits, labels) == pytest.approx(expected.item(), rel=1e-5)
    assert token_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-7)

    # positions that predict unlabelled tokens do not count
    changed = logits.clone()
    changed[0, 3] += 5.0
    changed[1, 4] -= 5.0
    assert token_kl(ref_logits, changed, labels) == pytest.approx(token_kl(ref_logits, logits, labels).item())


def test_token_kl_gradient_flows_to_the_policy_only() -> None:
    logits, labels = _logits_and_labels()
    ref_logits = torch.randn_like(logits).requires_grad_()
    logits.requires_grad_()
    token_kl(ref_logits, logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert ref_logits.grad is None
