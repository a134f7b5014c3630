"""The trainer keeps the newest ``keep_checkpoints`` checkpoints in its work dir (every one
is still handed to ``save_checkpoint``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safety.train_config import TrainConfig
from safety.train_state import prune_checkpoints
from safety.trainer import train

FAST = TrainConfig(
    mode="adaptive",
    batch_size=1,
    n_epochs=1,
    learning_rate=5e-3,
    warmup_ratio=0.0,
    lora_r=4,
    lora_alpha=8,
    max_seq_len=128,
    checkpoint_every=1,
)


def test_only_the_newest_checkpoints_stay_in_the_work_dir(load_tiny, chat_examples, tmp_path: Path) -> None:
    model, tokenizer = load_tiny()
    saved: list[int] = []
    config = dataclasses.replace(FAST, keep_checkpoints=2)
    train(
        model,
        tokenizer,
        chat_examples,
        [3.0] * len(chat_examples),
        config,
        work_dir=tmp_path,
        save_checkpoint=lambda step, path, metrics: saved.append(step),
    )
    assert saved == list(range(1, len(chat_examples) + 1))  # every checkpoint was handed over
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == [f"step-{len(chat_examples) - 1:06d}", f"step-{len(chat_examples):06d}"]


def test_without_a_bound_every_checkpoint_stays(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        (tmp_path / f"step-{step:06d}").mkdir()
    assert prune_checkpoints(tmp_path, 0) == []
    assert len(list(tmp_path.iterdir())) == 3


def test_pruning_orders_steps_by_number_not_by_name(tmp_path: Path) -> None:
    for step in (999_999, 1_000_000, 1_000_001):
        (tmp_path / f"step-{step:06d}").mkdir()
    assert prune_checkpoints(tmp_path, 2) == [tmp_path / "step-999999"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1000000", "step-1000001"]
