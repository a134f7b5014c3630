"""Token-budget micro-batches (``TrainConfig.micro_batch_tokens``, ``GUARDTUNE_MICRO_BATCH_TOKENS``)
on the tiny model: a step's accumulated gradient is its one-shot gradient whatever the split,
a run's losses are those of one micro-batch per step, and the passes outside training (the
reference cache, validation, evaluation, the probe's features) give the same results batched
by tokens as batched by count."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from safety.batching import token_batches
from safety.data import collate, encode_example
from safety.evaluate import example_losses
from safety.generation import GenerationSettings, generate, prompt_token_ids
from safety.objective import answer_window, example_sums, weighted_loss
from safety.probe.features import extract_features
from safety.reference import compute_reference_cache, reference_forward
from safety.train_config import TrainConfig
from safety.train_state import lora_config
from safety.train_step import accumulate_gradients, count_answer_tokens, example_weights
from safety.trainer import StepMetrics, train
from safety.validation import validation_pass

# No LoRA dropout: its masks are random draws whose shapes follow the micro-batch, so with
# dropout two splits of a step are equal in distribution, not in value.
CONFIG = TrainConfig(
    mode="adaptive",
    batch_size=8,
    n_epochs=3,
    learning_rate=5e-3,
    warmup_ratio=0.0,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    max_seq_len=256,
    checkpoint_every=0,
)
RISKS = [1.0, 5.0, 2.5, 4.0, 3.0, 5.0, 1.5, 3.5]  # mixed: some examples only SFT, some mostly KL
BUDGET = 100  # padded tokens: the varied chat examples (37 to 62 tokens) make 5 micro-batches of 1 or 2


def _varied(chat_examples: list[dict]) -> list[dict]:
    """The chat examples with a longer answer on two of them, so lengths differ widely."""
    examples = [dict(e) for e in chat_examples]
    examples[2] = {"prompt": "Count to twelve.", "completion": " ".join(str(i) for i in range(1, 13))}
    examples[5] = {"prompt": "List some colours.", "completion": "Red, green, blue, cyan, magenta, yellow, black."}
    return examples


def _gradients(peft, tokenizer, encoded, weights, cache, max_tokens) -> tuple[list[torch.Tensor], float]:
    """The LoRA gradient of one step over all of ``encoded``, and its loss."""
    refs = cache.rows if cache is not None else None
    indices = list(range(len(encoded)))
    sums = accumulate_gradients(peft, tokenizer, encoded, indices, weights, len(encoded), refs, max_tokens)
    grads = [p.grad.clone() for p in peft.parameters() if p.requires_grad]
    peft.zero_grad(set_to_none=True)
    return grads, sums.loss


@pytest.mark.parametrize("reference", ["exact", "cached"])
def test_the_accumulated_gradient_equals_the_one_shot_gradient(load_tiny, chat_examples, reference) -> None:
    model, tokenizer = load_tiny()
    examples = _varied(chat_examples)
    encoded = [encode_example(tokenizer, e, CONFIG.max_seq_len) for e in examples]
    cache = compute_reference_cache(model, encoded, tokenizer.pad_token_id, 16) if reference == "cached" else None
    torch.manual_seed(0)
    peft = get_peft_model(model, lora_config(CONFIG))
    with torch.no_grad():  # move the adapter off the identity, so the KL has a gradient
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    weights = example_weights(CONFIG, RISKS)
    assert len({w for w, _ in weights}) > 2  # the risks give different weights
    assert len(token_batches([len(e.input_ids) for e in encoded], BUDGET)) == 5

    one_shot, loss = _gradients(peft, tokenizer, encoded, weights, cache, None)
    split, split_loss = _gradients(peft, tokenizer, encoded, weights, cache, BUDGET)
    assert split_loss == pytest.approx(loss, rel=1e-6)
    assert any(bool(g.abs().max() > 0) for g in one_shot)
    for whole, parts in zip(one_shot, split, strict=True):
        torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-7)


def test_the_step_reads_logits_only_from_the_first_answer_position_with_the_full_forwards_loss(
    load_tiny, chat_examples
) -> None:
    """The training step asks the model for the logits from the first position predicting an
    answer token on (``answer_window``); its loss and gradient are those of a forward with
    every position's logits, the reference's included (exact KL)."""
    model, tokenizer = load_tiny()
    examples = _varied(chat_examples)
    examples[0] = {"prompt": "Please read this long preamble first. " * 8 + "Now say hi.", "completion": "Hi."}
    encoded = [encode_example(tokenizer, e, CONFIG.max_seq_len) for e in examples]
    batch = collate(encoded, tokenizer.pad_token_id)
    assert 5 < answer_window(batch["labels"]) < batch["input_ids"].shape[1] // 2  # a window to skip
    torch.manual_seed(0)
    peft = get_peft_model(model, lora_config(CONFIG))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    weights = example_weights(CONFIG, RISKS)
    windowed, loss = _gradients(peft, tokenizer, encoded, weights, None, None)

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with reference_forward(peft):
        ref_logits = peft(**inputs).logits
    ce, kl, _ = example_sums(peft(**inputs).logits, batch["labels"], ref_logits)
    w_sft, w_kl = torch.tensor(weights).unbind(-1)
    full_loss = weighted_loss(ce, kl, w_sft, w_kl, sum(count_answer_tokens(e) for e in encoded))
    full_loss.backward()
    full = [p.grad for p in peft.parameters() if p.requires_grad]
    assert loss == pytest.approx(full_loss.item(), rel=1e-6)
    for mine, theirs in zip(windowed, full, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


def _run(load_tiny, examples, config: TrainConfig, work_dir: Path, validation=None) -> list[StepMetrics]:
    model, tokenizer = load_tiny()
    metrics: list[StepMetrics] = []
    train(model, tokenizer, examples, RISKS, config, work_dir=work_dir, on_step=metrics.append, validation=validation)
    return metrics


def test_a_run_in_token_budget_micro_batches_has_the_losses_of_one_micro_batch(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    examples = _varied(chat_examples)
    config = dataclasses.replace(CONFIG, checkpoint_every=1)  # validation at every step
    whole = _run(load_tiny, examples, config, tmp_path / "whole", validation=examples[:3])
    budgeted = dataclasses.replace(config, micro_batch_tokens=BUDGET)
    split = _run(load_tiny, examples, budgeted, tmp_path / "split", validation=examples[:3])
    assert len(whole) == 3
    assert [m.loss for m in split] == pytest.approx([m.loss for m in whole], rel=1e-4)
    assert [m.kl for m in split] == pytest.approx([m.kl for m in whole], rel=1e-4, abs=1e-9)
    assert [m.valid_loss for m in split] == pytest.approx([m.valid_loss for m in whole], rel=1e-4)
    assert [m.tokens for m in split] == [m.tokens for m in whole]


def test_a_run_may_resume_with_another_micro_batch_budget(load_tiny, chat_examples, tmp_path: Path) -> None:
    examples = _varied(chat_examples)
    config = dataclasses.replace(CONFIG, checkpoint_every=1, n_epochs=2)
    whole = _run(load_tiny, examples, config, tmp_path / "whole")
    model, tokenizer = load_tiny()
    resumed: list[StepMetrics] = []
    train(
        model,
        tokenizer,
        examples,
        RISKS,
        dataclasses.replace(config, micro_batch_tokens=BUDGET, activation_checkpointing=True),
        work_dir=tmp_path / "resumed",
        on_step=resumed.append,
        resume_dir=tmp_path / "whole" / "checkpoints" / "step-000001",
    )
    assert [m.step for m in resumed] == [2]
    assert resumed[0].loss == pytest.approx(whole[1].loss, rel=1e-4)


@pytest.mark.slow
def test_a_batch_of_64_examples_of_2048_tokens_has_the_same_loss_in_micro_batches_of_one_or_four(
    load_tiny, tmp_path: Path
) -> None:
    """The issue's job on CPU: ``batch_size`` 64 of 2048-token examples. One micro-batch of
    them holds 64 × 2048 logits over the 49152-token vocabulary (26 GB in fp32; the step
    keeps those from the first answer position on, still GBs), beyond this machine; micro-batches of one example each (a 2048-token budget) and of four
    (8192) train with the same loss (the one-shot equality, under ``adaptive`` with mixed
    risks, is the test above). Plain SFT (``none``): no reference pass, a third less time."""
    _, tokenizer = load_tiny()
    word = " lorem"
    per_word = len(tokenizer(word, add_special_tokens=False)["input_ids"])
    examples = [
        {"prompt": f"Example {i}:" + word * (1900 // per_word), "completion": f"Answer {i}." + word * 60}
        for i in range(64)
    ]
    config = dataclasses.replace(CONFIG, mode="none", batch_size=64, n_epochs=1, max_seq_len=2048)
    lengths = [len(encode_example(tokenizer, e, 2048).input_ids) for e in examples]
    assert min(lengths) > 1900
    losses = {}
    for budget in (2048, 8192):
        model, _ = load_tiny()
        metrics: list[StepMetrics] = []
        budgeted = dataclasses.replace(config, micro_batch_tokens=budget)
        train(model, tokenizer, examples, [1.0] * 64, budgeted, work_dir=tmp_path / str(budget), on_step=metrics.append)
        losses[budget] = [m.loss for m in metrics]
    assert len(losses[2048]) == 1
    assert losses[8192] == pytest.approx(losses[2048], rel=1e-5)


def test_the_reference_cache_batched_by_tokens_is_the_cache_batched_by_count(load_tiny, chat_examples) -> None:
    model, tokenizer = load_tiny()
    encoded = [encode_example(tokenizer, e, 256) for e in _varied(chat_examples)]
    by_count = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 8)
    by_tokens = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 8, max_tokens=BUDGET)
    assert torch.equal(by_tokens.offsets, by_count.offsets)
    assert torch.equal(by_tokens.ids, by_count.ids)
    torch.testing.assert_close(by_tokens.logprobs, by_count.logprobs, rtol=1e-3, atol=1e-3)


def test_validation_and_example_losses_batched_by_tokens_are_the_same(load_tiny, chat_examples) -> None:
    model, tokenizer = load_tiny()
    examples = _varied(chat_examples)
    encoded = [encode_example(tokenizer, e, 256) for e in examples]
    by_count = validation_pass(model, encoded, tokenizer.pad_token_id, 8)
    by_tokens = validation_pass(model, encoded, tokenizer.pad_token_id, 8, BUDGET)
    assert by_tokens.loss == pytest.approx(by_count.loss, rel=1e-5)
    assert by_tokens.tokens == by_count.tokens
    per_example = example_losses(model, tokenizer, examples, max_len=256)
    per_example_by_tokens = example_losses(model, tokenizer, examples, max_len=256, max_tokens=BUDGET)
    assert [c for _, c in per_example_by_tokens] == [c for _, c in per_example]  # in input order
    assert [n for n, _ in per_example_by_tokens] == pytest.approx([n for n, _ in per_example], rel=1e-4)


def test_generation_batched_by_tokens_answers_in_input_order(load_tiny) -> None:
    model, tokenizer = load_tiny()
    prompts = ["Tell me a long story about a brave knight and a dragon", "Hi", "What is 2+2?", "Name a colour."]
    by_count = generate(model, tokenizer, prompts, GenerationSettings(max_new_tokens=6, batch_size=4))
    settings = GenerationSettings(max_new_tokens=6, batch_size=4, max_tokens=100)
    lengths = [len(prompt_token_ids(tokenizer, p, settings.max_prompt_len)) + 6 for p in prompts]
    assert len(token_batches(lengths, 100, 4)) == 2
    assert generate(model, tokenizer, prompts, settings) == by_count


def test_probe_features_batched_by_tokens_are_the_same(load_tiny) -> None:
    model, tokenizer = load_tiny()
    prompts = ["Hi", "Tell me a long story about a brave knight and a dragon", "What is 2+2?", "Name a colour."]
    by_count = extract_features(model, tokenizer, prompts, [0, -1])
    assert len(token_batches([len(prompt_token_ids(tokenizer, p, 512)) for p in prompts], 80)) == 3
    by_tokens = extract_features(model, tokenizer, prompts, [0, -1], max_tokens=80)
    torch.testing.assert_close(by_tokens, by_count, rtol=1e-4, atol=1e-5)
