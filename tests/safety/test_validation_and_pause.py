"""Token accuracy, the validation pass at checkpoints, and pausing the trainer at a step
boundary (resumed bit-identically), on the tiny model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safety.checkpoints import read_trainer_state
from safety.data import IGNORE_INDEX, encode_example
from safety.train_config import TrainConfig, TrainOutcome
from safety.trainer import StepMetrics, train
from safety.validation import token_accuracy_counts, validation_pass

CONFIG = TrainConfig(
    mode="adaptive",
    batch_size=1,
    n_epochs=2,
    learning_rate=5e-3,
    warmup_ratio=0.25,
    lr_schedule="cosine",
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.1,
    max_seq_len=128,
    checkpoint_every=4,
)
RISKS = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 1.0, 3.0]


def test_token_accuracy_counts_labelled_next_token_hits() -> None:
    logits = torch.zeros(1, 4, 5)
    for position, token in enumerate([2, 3, 1, 4]):  # the argmax at each position
        logits[0, position, token] = 1.0
    labels = torch.tensor([[IGNORE_INDEX, 2, 0, IGNORE_INDEX]])  # positions 0 and 1 predict labels
    assert token_accuracy_counts(logits, labels) == (1, 2)  # 2 right at 0, 3 != 0 at 1
    assert token_accuracy_counts(logits, torch.full((1, 4), IGNORE_INDEX)) == (0, 0)


def test_validation_metrics_at_checkpoints_and_train_accuracy(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    metrics: list[StepMetrics] = []
    saved: dict[int, StepMetrics] = {}
    validation = chat_examples[:3]
    result = train(
        model,
        tokenizer,
        chat_examples,
        RISKS,
        CONFIG,
        work_dir=tmp_path,
        on_step=metrics.append,
        save_checkpoint=lambda step, _, m: saved.__setitem__(step, m),
        validation=validation,
    )
    assert sorted(saved) == [4, 8, 12, 16]
    with_valid = [m.step for m in metrics if m.valid_loss is not None]
    assert with_valid == [4, 8, 12, 16]
    assert all(saved[s] == metrics[s - 1] for s in saved)
    assert all(0.0 <= m.train_accuracy <= 1.0 for m in metrics)
    assert all(0.0 <= m.valid_accuracy <= 1.0 for m in metrics if m.valid_loss is not None)
    assert metrics[-1].valid_loss < metrics[3].valid_loss  # the validation examples are trained on too

    # The last step's numbers are the trained model's on the validation set.
    encoded = [encode_example(tokenizer, e, CONFIG.max_seq_len) for e in validation]
    again = validation_pass(result.model, encoded, tokenizer.pad_token_id, batch_size=1)
    assert (again.loss, again.mean_token_accuracy) == pytest.approx(
        (metrics[-1].valid_loss, metrics[-1].valid_accuracy), rel=1e-6
    )
    assert not result.model.training


def test_pause_checkpoints_the_boundary_and_resume_is_bit_identical(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    full: list[StepMetrics] = []
    full_result = train(
        model,
        tokenizer,
        chat_examples,
        RISKS,
        CONFIG,
        work_dir=tmp_path / "full",
        on_step=full.append,
        validation=chat_examples[:2],
    )

    model, tokenizer = load_tiny()
    first: list[StepMetrics] = []
    saved: list[int] = []
    paused = train(
        model,
        tokenizer,
        chat_examples,
        RISKS,
        CONFIG,
        work_dir=tmp_path / "paused",
        on_step=first.append,
        save_checkpoint=lambda step, _, m: saved.append(step),
        should_pause=lambda: len(first) == 6,
        validation=chat_examples[:2],
    )
    assert paused.outcome == TrainOutcome.PAUSED
    assert paused.steps == 6
    assert paused.adapter_dir is None
    assert saved == [4, 6]  # step 6 is not a regular checkpoint
    assert paused.checkpoint_dir.name == "step-000006"
    assert read_trainer_state(paused.checkpoint_dir)["step"] == 6

    model, tokenizer = load_tiny()
    rest: list[StepMetrics] = []
    resumed = train(
        model,
        tokenizer,
        chat_examples,
        RISKS,
        CONFIG,
        work_dir=tmp_path / "resumed",
        on_step=rest.append,
        resume_dir=paused.checkpoint_dir,
        validation=chat_examples[:2],
    )
    assert [m.step for m in first + rest] == list(range(1, 17))
    strip = lambda m: dataclasses.replace(m, tokens_per_s=0.0)  # noqa: E731 (wall-clock)
    assert [strip(m) for m in first + rest] == [strip(m) for m in full]  # exactly equal, every field
    assert resumed.summary == full_result.summary
    a, b = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (full_result, resumed))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Paused again right after resuming: nothing new to save, the resume checkpoint stands.
    model, tokenizer = load_tiny()
    again = train(
        model,
        tokenizer,
        chat_examples,
        RISKS,
        CONFIG,
        work_dir=tmp_path / "again",
        resume_dir=paused.checkpoint_dir,
        should_pause=lambda: True,
    )
    assert again.outcome == TrainOutcome.PAUSED
    assert again.steps == 6
    assert again.checkpoint_dir is None
