"""Continued training (a job on ``model="ft:…"``): ``train(..., init_adapter=...)`` starts from
the released adapter's weights, while the reference of its KL term stays the base model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from safety.checkpoints import ADAPTER_WEIGHTS_FILE, load_adapter
from safety.data import collate, encode_example
from safety.reference import reference_forward
from safety.train_config import TrainOutcome
from safety.trainer import StepMetrics, train
from tests.safety.test_trainer import FAST

RISKS = [1.0, 5.0, 1.0, 5.0, 1.0, 1.0, 5.0, 1.0]


def _logits(model, tokenizer, example) -> torch.Tensor:
    batch = collate([encode_example(tokenizer, example, 128)], tokenizer.pad_token_id)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_a_continued_run_starts_from_the_released_adapter_against_the_base(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    config = dataclasses.replace(FAST, n_epochs=2)
    model, tokenizer = load_tiny()
    released = train(model, tokenizer, chat_examples, RISKS, config, work_dir=tmp_path / "first").adapter_dir
    assert released is not None
    released_weights = load_file(str(released / ADAPTER_WEIGHTS_FILE))

    # Before its first step, the continued run's adapter is the released one, weight for weight.
    stopped = train(
        load_tiny()[0],
        tokenizer,
        chat_examples,
        RISKS,
        config,
        work_dir=tmp_path / "stopped",
        should_cancel=lambda: True,  # polled before the first step
        init_adapter=released,
    )
    assert (stopped.outcome, stopped.steps) == (TrainOutcome.CANCELLED, 0)
    start = get_peft_model_state_dict(stopped.model)
    assert start.keys() == released_weights.keys()
    assert all(torch.equal(start[key], released_weights[key]) for key in released_weights)
    # Its reference (adapter disabled) is the base model; with the adapter on, it is the released model.
    example = chat_examples[0]
    base_logits = _logits(load_tiny()[0], tokenizer, example)
    with reference_forward(stopped.model):
        assert torch.equal(_logits(stopped.model, tokenizer, example), base_logits)
    parent_logits = _logits(load_adapter(load_tiny()[0], released), tokenizer, example)
    assert torch.allclose(_logits(stopped.model, tokenizer, example), parent_logits, atol=1e-6)
    assert not torch.allclose(parent_logits, base_logits, atol=1e-3)  # the released adapter does something

    # A whole continued run trains that adapter further, its KL taken against the base from step 1
    # (a fresh adapter starts at the base: KL 0 there).
    steps: list[StepMetrics] = []
    continued = train(
        load_tiny()[0],
        tokenizer,
        chat_examples,
        RISKS,
        config,
        work_dir=tmp_path / "continued",
        on_step=steps.append,
        init_adapter=released,
    )
    assert continued.outcome == TrainOutcome.COMPLETED
    assert steps[0].kl is not None
    assert steps[0].kl > 1e-6
    fresh: list[StepMetrics] = []
    train(load_tiny()[0], tokenizer, chat_examples, RISKS, config, work_dir=tmp_path / "fresh", on_step=fresh.append)
    assert fresh[0].kl is not None
    assert fresh[0].kl < 1e-6
    assert continued.adapter_dir is not None
    final = load_file(str(continued.adapter_dir / ADAPTER_WEIGHTS_FILE))
    assert any(not torch.equal(final[key], released_weights[key]) for key in released_weights)
