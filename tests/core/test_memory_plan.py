"""``core.jobs.memory_plan``: the estimate's parts, its linearity in tokens, what
checkpointing and the reference change, the issue's reference figures, and the micro-batch
it picks."""

from __future__ import annotations

import pytest

from core.jobs.memory_plan import (
    GIB,
    ModelShape,
    TrainingLayout,
    example_tokens,
    micro_batch_tokens_that_fit,
    training_memory,
    worker_layout,
)
from core.settings import Settings

LLAMA_8B = ModelShape.from_config(
    {
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 32,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    },
    parameters=8_030_000_000,
)
CUDA = TrainingLayout(weight_bytes=2, half_precision=True, checkpointing=True)
CUDA_NO_CHECKPOINTING = TrainingLayout(weight_bytes=2, half_precision=True, checkpointing=False)


def test_the_shape_reads_a_transformers_config() -> None:
    assert LLAMA_8B.kv_size == 1024  # 8 key-value heads of 128
    assert (LLAMA_8B.layers, LLAMA_8B.vocab_size) == (32, 128256)
    assert ModelShape(**LLAMA_8B.to_dict()) == LLAMA_8B


def test_fp32_weights_of_an_8b_base_take_32_gb_and_bf16_half_of_it() -> None:
    fp32 = training_memory(LLAMA_8B, TrainingLayout(4, False, False), 0)
    assert fp32.weights == 32_120_000_000
    assert training_memory(LLAMA_8B, CUDA, 0).weights == fp32.weights // 2


def test_activations_and_logits_grow_linearly_with_the_micro_batch() -> None:
    one, two = training_memory(LLAMA_8B, CUDA, 2048), training_memory(LLAMA_8B, CUDA, 4096)
    assert two.activations == 2 * one.activations
    assert two.logits == 2 * one.logits
    assert two.weights + two.lora_and_optimizer == one.weights + one.lora_and_optimizer


def test_checkpointing_keeps_a_fraction_of_the_activations() -> None:
    kept = training_memory(LLAMA_8B, CUDA, 2048).activations
    full = training_memory(LLAMA_8B, CUDA_NO_CHECKPOINTING, 2048).activations
    assert kept < full / 10


def test_the_exact_reference_adds_its_logits() -> None:
    exact = TrainingLayout(2, True, True, exact_reference=True)
    assert training_memory(LLAMA_8B, exact, 2048).logits > training_memory(LLAMA_8B, CUDA, 2048).logits


def test_the_issues_figures_8_examples_of_2048_tokens_do_not_fit_80_gb_without_checkpointing() -> None:
    assert training_memory(LLAMA_8B, CUDA_NO_CHECKPOINTING, 8 * 2048).total > 80 * GIB


def test_an_8b_base_trains_one_2048_token_example_on_24_gb_with_checkpointing() -> None:
    assert training_memory(LLAMA_8B, CUDA, 2048).total < 24 * GIB


def test_the_micro_batch_picked_is_whole_examples_that_fit() -> None:
    tokens = micro_batch_tokens_that_fit(LLAMA_8B, CUDA, 80 * GIB, 2048)
    assert tokens is not None
    assert tokens % 2048 == 0
    assert training_memory(LLAMA_8B, CUDA, tokens).total <= 80 * GIB
    assert training_memory(LLAMA_8B, CUDA, tokens + 2048).total > 80 * GIB


def test_no_micro_batch_fits_when_one_example_does_not() -> None:
    assert micro_batch_tokens_that_fit(LLAMA_8B, CUDA, 16 * GIB, 2048) is None
    assert micro_batch_tokens_that_fit(LLAMA_8B, CUDA, 8 * GIB, 2048) is None  # below the weights alone


def test_a_dpo_pair_is_planned_as_both_its_sequences() -> None:
    assert example_tokens(2048, "supervised") == 2048
    assert example_tokens(2048, "dpo") == 4096
    exact = TrainingLayout(weight_bytes=2, half_precision=True, checkpointing=True, exact_reference=True)
    # on 24 GB an 8B base trains one 2048-token example with the exact reference, not one pair
    assert micro_batch_tokens_that_fit(LLAMA_8B, exact, 24 * GIB, example_tokens(2048, "supervised")) == 2048
    assert micro_batch_tokens_that_fit(LLAMA_8B, exact, 24 * GIB, example_tokens(2048, "dpo")) is None


@pytest.mark.parametrize(
    ("env", "weight_bytes", "checkpointing"),
    [
        ({}, 4, False),
        ({"GUARDTUNE_DEVICE": "cuda"}, 2, True),
        ({"GUARDTUNE_DEVICE": "cuda", "GUARDTUNE_QUANTIZE": "4bit"}, 0.53, True),
        ({"GUARDTUNE_DEVICE": "cuda", "GUARDTUNE_ACTIVATION_CHECKPOINTING": "false"}, 2, False),
    ],
)
def test_the_workers_layout_follows_their_settings(monkeypatch, env, weight_bytes, checkpointing) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    layout = worker_layout(Settings(), exact_reference=False)
    assert (layout.weight_bytes, layout.checkpointing) == (weight_bytes, checkpointing)
