"""Preference fine-tuning (``safety.dpo``) on the tiny model: the objective learns the
preference, shares SFT's risk weights, and resumes exactly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import safety.train_step
from safety.dpo import dpo_loss, preference_pass
from safety.train_config import TrainConfig
from safety.train_state import encode_all
from safety.trainer import StepMetrics, train

DPO = TrainConfig(
    method="dpo",
    dpo_beta=0.5,
    mode="none",
    batch_size=2,
    n_epochs=6,
    learning_rate=2e-2,
    warmup_ratio=0.0,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    max_seq_len=128,
    checkpoint_every=0,
)


@pytest.fixture
def pairs() -> list[dict]:
    """Four preference pairs: the right sum preferred to a refusal."""
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"It is {2 * i}."}],
            "non_preferred_output": [{"role": "assistant", "content": "I cannot help with that."}],
        }
        for i in range(4)
    ]


def test_dpo_loss_is_the_sigmoid_loss_of_the_margin() -> None:
    loss, margin = dpo_loss(
        torch.tensor([-1.0, -5.0]),
        torch.tensor([-3.0, -1.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([-2.0, -2.0]),
        0.1,
    )
    assert margin.tolist() == pytest.approx([0.2, -0.4])
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.4))])


def test_dpo_learns_to_prefer_the_preferred_answers(load_tiny, pairs, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    metrics: list[StepMetrics] = []
    result = train(model, tokenizer, pairs, [1.0] * 4, DPO, work_dir=tmp_path, on_step=metrics.append)

    # The adapter starts as the identity: policy = reference, margin 0, loss log 2.
    assert metrics[0].sft_loss == pytest.approx(math.log(2), abs=1e-4)
    assert metrics[0].reward_margin == pytest.approx(0.0, abs=1e-4)
    assert metrics[-1].sft_loss < 0.5 * math.log(2)
    assert metrics[-1].reward_accuracy == 1.0 and metrics[-1].reward_margin > 0
    assert metrics[-1].train_accuracy is None
    after = preference_pass(result.model, tokenizer, encode_all(tokenizer, pairs, DPO), DPO.dpo_beta, 4)
    assert after.correct == after.pairs == 4
    assert after.mean(after.dpo) < 0.5 * math.log(2)
    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_model.safetensors").exists()


def test_dpo_and_sft_weight_by_the_same_function(load_tiny, pairs, tmp_path: Path, monkeypatch) -> None:
    """Both objectives take a risk's weights from ``safety.objective.kl_weights`` through
    ``train_step.loss_weights``: a spy there sees every pair's risk, and a DPO step reports
    the weights an SFT step of the same risks reports."""
    seen: list[float] = []
    real = safety.train_step.kl_weights

    def spy(risk: float, *args: float) -> tuple[float, float]:
        seen.append(risk)
        return real(risk, *args)

    monkeypatch.setattr(safety.train_step, "kl_weights", spy)
    risks = [5.0, 1.0, 3.5, 5.0]
    adaptive = dataclasses.replace(DPO, mode="adaptive", n_epochs=1, batch_size=4)
    model, tokenizer = load_tiny()
    dpo_steps: list[StepMetrics] = []
    train(model, tokenizer, pairs, risks, adaptive, work_dir=tmp_path / "dpo", on_step=dpo_steps.append)
    assert sorted(seen) == sorted(risks)

    chats = [{"messages": [*p["input"]["messages"], *p["preferred_output"]]} for p in pairs]
    sft = dataclasses.replace(adaptive, method="supervised")
    model, tokenizer = load_tiny()
    sft_steps: list[StepMetrics] = []
    train(model, tokenizer, chats, risks, sft, work_dir=tmp_path / "sft", on_step=sft_steps.append)
    (d,), (s,) = dpo_steps, sft_steps
    assert (d.kl_weight, d.sft_weight, d.risk) == pytest.approx((s.kl_weight, s.sft_weight, s.risk))
    assert (d.kl_weight_flagged, d.kl_weight_unflagged) == pytest.approx((s.kl_weight_flagged, s.kl_weight_unflagged))
    assert d.kl_weight_flagged == pytest.approx(0.9)  # risk 5: the paper's upper clamp


def test_a_risky_pair_moves_the_model_less(load_tiny, pairs, tmp_path: Path) -> None:
    """Adaptive DPO on pairs all at risk 5 learns the preference less than on the same pairs at risk 1."""
    config = dataclasses.replace(DPO, mode="adaptive", n_epochs=3)
    margins = {}
    for risk in (1.0, 5.0):
        model, tokenizer = load_tiny()
        result = train(model, tokenizer, pairs, [risk] * 4, config, work_dir=tmp_path / str(risk))
        sums = preference_pass(result.model, tokenizer, encode_all(tokenizer, pairs, config), config.dpo_beta, 4)
        margins[risk] = sums.mean(sums.margin)
    assert margins[1.0] > 1.5 * margins[5.0]  # AdamW undoes a uniform w_sft: the KL does the holding back


def test_dpo_resume_reproduces_the_uninterrupted_run(load_tiny, pairs, tmp_path: Path) -> None:
    config = dataclasses.replace(DPO, mode="adaptive", n_epochs=2, checkpoint_every=2)
    risks = [1.0, 5.0, 3.0, 2.0]
    model, tokenizer = load_tiny()
    full: list[StepMetrics] = []
    train(model, tokenizer, pairs, risks, config, work_dir=tmp_path / "full", on_step=full.append, validation=pairs)
    model, tokenizer = load_tiny()
    resumed: list[StepMetrics] = []
    train(
        model,
        tokenizer,
        pairs,
        risks,
        config,
        work_dir=tmp_path / "resumed",
        resume_dir=tmp_path / "full" / "checkpoints" / "step-000002",
        on_step=resumed.append,
        validation=pairs,
    )
    assert [m.step for m in resumed] == [3, 4]
    for a, b in zip(full[2:], resumed, strict=True):
        assert (a.loss, a.sft_loss, a.kl, a.reward_margin) == pytest.approx(
            (b.loss, b.sft_loss, b.kl, b.reward_margin), rel=1e-5, abs=1e-7
        )
    assert full[-1].valid_loss is not None and full[-1].valid_accuracy is not None
    assert full[-1].valid_loss == pytest.approx(resumed[-1].valid_loss, rel=1e-5)


def test_pair_terms_read_logits_only_from_the_answers_with_the_full_forwards_terms(load_tiny, pairs) -> None:
    """A pair's forward asks for the logits from the first position predicting an answer token
    on (``safety.objective.answer_inputs``); its DPO loss, margin, KL and gradient are those of
    a forward with every position's logits."""
    from peft import get_peft_model

    from safety.data import collate
    from safety.dpo import pair_terms
    from safety.objective import answer_window, example_sums
    from safety.reference import reference_forward
    from safety.train_state import lora_config

    model, tokenizer = load_tiny()
    pairs[0]["input"]["messages"][0]["content"] = "Read this long preamble first. " * 8 + "What is 0 plus 0?"
    encoded = encode_all(tokenizer, pairs, DPO)
    duos = [(encoded[2 * i], encoded[2 * i + 1]) for i in range(len(pairs))]
    batch = collate([d[0] for d in duos] + [d[1] for d in duos], tokenizer.pad_token_id)
    assert 5 < answer_window(batch["labels"])  # a window to skip
    torch.manual_seed(0)
    peft = get_peft_model(model, lora_config(DPO))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    terms, _ = pair_terms(peft, duos, tokenizer.pad_token_id, DPO.dpo_beta)
    (terms.dpo.sum() + terms.kl.sum()).backward()
    windowed = [p.grad.clone() for p in peft.parameters() if p.requires_grad]
    peft.zero_grad()

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad(), reference_forward(peft):
        ref_logits = peft(**inputs).logits
    ce, kl, _ = example_sums(peft(**inputs).logits, batch["labels"], ref_logits)
    ref_ce, _, _ = example_sums(ref_logits, batch["labels"])
    n = len(duos)
    loss, margin = dpo_loss(-ce[:n], -ce[n:], -ref_ce[:n], -ref_ce[n:], DPO.dpo_beta)
    (loss.sum() + kl[:n].sum()).backward()
    torch.testing.assert_close(terms.dpo, loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.margin, margin.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.kl, kl[:n].detach(), rtol=1e-5, atol=1e-6)
    full = [p.grad for p in peft.parameters() if p.requires_grad]
    for mine, theirs in zip(windowed, full, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def test_a_token_budget_gives_each_pair_its_own_weights(load_tiny, pairs, tmp_path: Path) -> None:
    """Under a token budget the pairs of a step run in micro-batches ordered by length; each
    pair keeps its own risk's weights, so the run's losses are those of one micro-batch (they
    were not when the weights were handed out in the step's order)."""
    pairs[0]["preferred_output"][0]["content"] = "It is zero, since nothing added to nothing stays nothing at all."
    pairs[2]["non_preferred_output"][0]["content"] = "No."
    config = dataclasses.replace(DPO, mode="adaptive", n_epochs=2, batch_size=4)
    risks = [5.0, 1.0, 1.0, 5.0]
    losses = {}
    for budget in (None, 64):
        model, tokenizer = load_tiny()
        metrics: list[StepMetrics] = []
        run = dataclasses.replace(config, micro_batch_tokens=budget)
        train(model, tokenizer, pairs, risks, run, work_dir=tmp_path / str(budget), on_step=metrics.append)
        losses[budget] = [m.loss for m in metrics]
    assert losses[64] == pytest.approx(losses[None], rel=1e-4)
