"""The adaptive objective: weights, SFT loss and token KL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from safety.data import IGNORE_INDEX, collate, encode_example
from safety.objective import batch_risk, example_sums, kl_weights, sft_budget, sft_loss, token_kl, weighted_loss


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
    assert kl_weights(1.0, kl_weight_min=0.0) == (0.9, 0.0)  # benign batch: no KL term at all
    assert kl_weights(2.0, kl_weight_min=0.0) == (0.9, 0.0)
    bounds = dict(kl_weight_min=0.0, kl_weight_max=1.0, sft_weight_min=0.0, sft_weight_max=1.0)
    assert kl_weights(5.0, **bounds) == (0.0, 1.0)
    assert kl_weights(1.0, kl_weight_min=0.0, sft_weight_max=1.0) == (1.0, 0.0)
    with pytest.raises(ValueError):
        kl_weights(math.nan)


def test_a_cutoff_removes_the_cross_entropy_of_risks_at_or_above_it() -> None:
    """bounded: w_sft 0 (not the floor 0.1) from the cutoff on; below it, and w_kl, the paper's."""
    assert kl_weights(5.0, sft_cutoff=4.0) == (0.0, 0.9)
    assert kl_weights(4.0, sft_cutoff=4.0) == pytest.approx((0.0, 2 / 3))
    assert kl_weights(3.9, sft_cutoff=4.0) == kl_weights(3.9)
    assert kl_weights(1.0, sft_cutoff=4.0) == (0.9, 0.1)


def test_the_sft_budget_is_the_token_weighted_mean_of_w_sft_at_most_1() -> None:
    assert sft_budget([0.0, 0.0, 0.0, 0.9], [10, 10, 10, 10]) == pytest.approx(0.225)
    assert sft_budget([0.0, 0.9], [30, 10]) == pytest.approx(0.225)  # a long flagged line weighs more
    assert sft_budget([1.0, 1.0], [3, 5]) == 1.0  # plain SFT
    assert sft_budget([1.5], [4]) == 1.0  # never above plain SFT's step
    assert sft_budget([0.5, 0.5], [0, 0]) == 1.0  # nothing to train
    with pytest.raises(ValueError):
        sft_budget([0.5], [1, 2])


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
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0
    assert ref_logits.grad is None


# --- per-example weights on the tiny model --------------------------------------------------


def _perturbed_lora(load_tiny):
    """The tiny model with a LoRA adapter whose B matrices are random (so P_θ ≠ P_ref)."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_tiny()
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model.eval(), tokenizer


def _by_hand(model, tokenizer, example) -> tuple[float, float, int]:
    """(Σ CE, Σ KL(P_ref ‖ P_θ), answer tokens) of one example, unpadded, token by token."""
    encoded = encode_example(tokenizer, example, 128)
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        with model.disable_adapter():
            log_ref = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    ce = kl = 0.0
    n = 0
    for t in range(1, len(encoded.labels)):
        if encoded.labels[t] == IGNORE_INDEX:
            continue
        ce -= log_p[t - 1, encoded.labels[t]].item()
        kl += sum(math.exp(r) * (r - q) for r, q in zip(log_ref[t - 1].tolist(), log_p[t - 1].tolist()))
        n += 1
    return ce, kl, n


def _batch_loss(model, tokenizer, examples, weights) -> float:
    batch = collate([encode_example(tokenizer, e, 128) for e in examples], tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        logits = model(**inputs).logits
        with model.disable_adapter():
            ref_logits = model(**inputs).logits
    ce, kl, n = example_sums(logits, batch["labels"], ref_logits)
    w_sft, w_kl = torch.tensor(weights).unbind(-1)
    return weighted_loss(ce, kl, w_sft, w_kl, int(n.sum())).item()


def test_a_batch_of_one_is_the_papers_formula(load_tiny, chat_examples) -> None:
    model, tokenizer = _perturbed_lora(load_tiny)
    example = chat_examples[6]  # multi-turn: two trained answers
    w_sft, w_kl = kl_weights(4.0)  # (1/3, 2/3)
    batch = collate([encode_example(tokenizer, example, 128)], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
        with model.disable_adapter():
            ref_logits = model(input_ids=batch["input_ids"]).logits
    paper = w_sft * sft_loss(logits, batch["labels"]) + w_kl * token_kl(ref_logits, logits, batch["labels"])
    ours = _batch_loss(model, tokenizer, [example], [(w_sft, w_kl)])
    assert ours == pytest.approx(paper.item(), rel=1e-6)
    ce, kl, n = _by_hand(model, tokenizer, example)
    assert kl > 1e-3  # the adapter moved the policy, so the KL term is really tested
    assert ours == pytest.approx((w_sft * ce + w_kl * kl) / n, rel=1e-4)


def test_each_example_of_a_batch_gets_its_own_weights(load_tiny, chat_examples) -> None:
    model, tokenizer = _perturbed_lora(load_tiny)
    harmful, benign = chat_examples[6], chat_examples[0]  # different lengths: padding must not count
    (ce5, kl5, n5), (ce1, kl1, n1) = _by_hand(model, tokenizer, harmful), _by_hand(model, tokenizer, benign)
    # risk 5 -> (w_sft, w_kl) = (0.1, 0.9); risk 1 -> (0.9, 0.1)
    expected = (0.1 * ce5 + 0.9 * kl5 + 0.9 * ce1 + 0.1 * kl1) / (n5 + n1)
    weights = [kl_weights(5.0), kl_weights(1.0)]
    assert _batch_loss(model, tokenizer, [harmful, benign], weights) == pytest.approx(expected, rel=1e-4)
    # the paper's batch mean (risk 3 -> (2/3, 1/3) for both) is a different number
    batch_mean = (2 / 3 * (ce5 + ce1) + 1 / 3 * (kl5 + kl1)) / (n5 + n1)
    assert abs(batch_mean - expected) > 0.05
    assert _batch_loss(model, tokenizer, [harmful, benign], [kl_weights(3.0)] * 2) == pytest.approx(
        batch_mean, rel=1e-4
    )


def test_weighted_loss_needs_kl_when_some_weight_is_positive() -> None:
    ce = torch.tensor([2.0, 4.0])
    assert weighted_loss(ce, None, torch.tensor([0.5, 1.0]), torch.zeros(2), 4).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="KL sums"):
        weighted_loss(ce, None, torch.ones(2), torch.tensor([0.0, 0.1]), 4)
