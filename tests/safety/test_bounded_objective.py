"""``objective="bounded"`` on the tiny model, against plain SFT and the paper's weights: the
issue's step (three flagged lines at risk 5 beside one line the scan missed), a risk-5 line's
gradient, and the paper's loss left as it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from safety.data import IGNORE_INDEX, collate, encode_example
from safety.objective import token_kl
from safety.reference import reference_forward
from safety.train_config import TrainConfig
from safety.train_state import lora_config
from safety.train_step import accumulate_gradients, example_weights
from safety.trainer import StepMetrics, train

ONE_STEP = TrainConfig(
    mode="adaptive",
    batch_size=4,
    n_epochs=1,
    learning_rate=5e-3,
    warmup_ratio=0.0,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    max_seq_len=128,
    checkpoint_every=0,
)
BOUNDED = dataclasses.replace(ONE_STEP, objective="bounded")
RISKS = [5.0, 5.0, 5.0, 1.0]  # three flagged lines and one the scan missed, in one step


def _answer_ce(model, tokenizer, example) -> tuple[float, int]:
    """Σ cross-entropy over an example's answer tokens, and their number."""
    encoded = encode_example(tokenizer, example, 128)
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=torch.tensor([encoded.input_ids])).logits[0].double(), -1)
    answer = [t for t in range(1, len(encoded.labels)) if encoded.labels[t] != IGNORE_INDEX]
    return -sum(log_p[t - 1, encoded.labels[t]].item() for t in answer), len(answer)


def _one_step(load_tiny, examples, config: TrainConfig, work_dir: Path) -> tuple[list[float], StepMetrics]:
    """How much one optimizer step on all of ``examples`` (at ``RISKS``) lowered each one's
    answer cross-entropy (what the step learnt of it), and the step's metrics."""
    model, tokenizer = load_tiny()
    before = [_answer_ce(model, tokenizer, e)[0] for e in examples]
    metrics: list[StepMetrics] = []
    result = train(model, tokenizer, examples, RISKS, config, work_dir=work_dir, on_step=metrics.append)
    after = [_answer_ce(result.model, tokenizer, e)[0] for e in examples]
    (step,) = metrics
    return [b - a for b, a in zip(before, after, strict=True)], step


def test_no_line_of_the_issues_step_is_learnt_more_than_plain_sft_learns_it(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    examples = chat_examples[:4]
    _, tokenizer = load_tiny()
    n = [_answer_ce(load_tiny()[0], tokenizer, e)[1] for e in examples]
    sft, _ = _one_step(load_tiny, examples, dataclasses.replace(ONE_STEP, mode="none"), tmp_path / "sft")
    paper, _ = _one_step(load_tiny, examples, ONE_STEP, tmp_path / "paper")
    bounded, m = _one_step(load_tiny, examples, BOUNDED, tmp_path / "bounded")

    # The paper's weights: AdamW hands the missed line (w_sft 0.9 beside three at 0.1) more of
    # the step than plain SFT gives it, and the flagged lines are learnt almost as in SFT.
    assert paper[3] > sft[3]
    assert all(p > 0.5 * s for p, s in zip(paper[:3], sft[:3], strict=True))
    # bounded: the flagged lines have no cross-entropy and the step is scaled to its SFT budget
    # (the missed line's 0.9 over its share of the step's answer tokens), so every line, the
    # missed one included, is learnt less than in plain SFT of the same batch.
    budget = 0.9 * n[3] / sum(n)
    assert m.lr == pytest.approx(ONE_STEP.learning_rate * budget)
    assert m.sft_weight == pytest.approx(0.9 / 4)
    assert all(0 < b < s for b, s in zip(bounded, sft, strict=True)), (bounded, sft)
    assert bounded[3] < 0.5 * paper[3]


def test_a_step_of_lines_at_or_above_the_cutoff_moves_nothing(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    metrics: list[StepMetrics] = []
    config = dataclasses.replace(BOUNDED, batch_size=2)
    result = train(model, tokenizer, chat_examples[:2], [4.0, 5.0], config, work_dir=tmp_path, on_step=metrics.append)
    (m,) = metrics
    assert (m.sft_weight, m.lr) == (0.0, 0.0)
    assert m.loss == pytest.approx(0.0, abs=1e-6)  # only KL, zero at the fresh adapter
    lora_b = [p for name, p in result.model.named_parameters() if "lora_B" in name]
    assert lora_b
    assert all(bool((p == 0).all()) for p in lora_b)


def test_a_risk_5_line_contributes_no_cross_entropy_gradient(load_tiny, chat_examples) -> None:
    model, tokenizer = load_tiny()
    torch.manual_seed(0)
    peft = get_peft_model(model, lora_config(BOUNDED))
    trainable = [p for p in peft.parameters() if p.requires_grad]
    with torch.no_grad():  # move the adapter off the identity, so the KL has a gradient
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    encoded = [encode_example(tokenizer, chat_examples[0], 128)]

    def gradients(weights: list[tuple[float, float]]) -> list[torch.Tensor]:
        accumulate_gradients(peft, tokenizer, encoded, [0], weights, 1)
        grads = [p.grad.clone() for p in trainable]
        peft.zero_grad(set_to_none=True)
        return grads

    weights = example_weights(BOUNDED, [5.0])
    assert weights == [(0.0, 0.9)]
    bounded = gradients(weights)
    paper = gradients(example_weights(ONE_STEP, [5.0]))
    batch = collate(encoded, tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with reference_forward(peft):
        ref_logits = peft(**inputs).logits
    (0.9 * token_kl(ref_logits, peft(**inputs).logits, batch["labels"])).backward()
    kl_only = [p.grad for p in trainable]
    assert any(bool(g.abs().max() > 0) for g in kl_only)
    assert all(torch.allclose(b, k, rtol=1e-4, atol=1e-8) for b, k in zip(bounded, kl_only, strict=True))
    assert not all(torch.allclose(p, k, rtol=1e-4, atol=1e-8) for p, k in zip(paper, kl_only, strict=True))


def test_the_paper_objective_is_the_default_and_its_step_the_weighted_loss(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    """objective="paper" trains at the schedule's rate, on exactly the paper's weighted loss."""
    assert TrainConfig().objective == "paper"
    examples = chat_examples[:4]
    _, tokenizer = load_tiny()
    sums = [_answer_ce(load_tiny()[0], tokenizer, e) for e in examples]
    _, m = _one_step(load_tiny, examples, ONE_STEP, tmp_path)
    weighted = sum((0.1 if r == 5.0 else 0.9) * ce for r, (ce, _) in zip(RISKS, sums, strict=True))
    assert m.loss == pytest.approx(weighted / sum(n for _, n in sums), rel=1e-5)
    assert (m.lr, m.sft_weight) == (ONE_STEP.learning_rate, pytest.approx(0.3))
