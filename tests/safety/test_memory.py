"""``safety.memory``: the weights' dtype per device, activation checkpointing (the same loss
and gradients as without, on the tiny model) and 4-bit quantization (refused off CUDA). The
GPU path itself is marked ``cuda``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from safety.data import encode_example
from safety.memory import (
    enable_activation_checkpointing,
    quantization_config,
    weight_dtype,
)
from safety.train_state import lora_config
from safety.train_step import accumulate_gradients, example_weights
from safety.trainer import StepMetrics, train
from tests.safety.test_micro_batches import CONFIG, RISKS


@pytest.mark.parametrize(
    ("device_type", "bf16_supported", "dtype"),
    [
        ("cpu", True, torch.float32),
        ("cpu", False, torch.float32),
        ("mps", True, torch.float32),
        ("cuda", True, torch.bfloat16),
        ("cuda", False, torch.float16),
    ],
)
def test_base_weights_are_half_precision_on_cuda_only(device_type, bf16_supported, dtype) -> None:
    assert weight_dtype(device_type, bf16_supported) == dtype


def test_no_quantization_is_none_and_4bit_is_refused_off_cuda() -> None:
    assert quantization_config("none", "cpu") is None
    with pytest.raises(ValueError, match="GUARDTUNE_QUANTIZE=4bit needs a CUDA device"):
        quantization_config("4bit", "cpu")


def _step(load_tiny, examples, checkpointing: bool) -> tuple[list[torch.Tensor], float, int]:
    """One step's LoRA gradient and loss over ``examples`` (exact reference), and how many
    times the first decoder layer's first module ran forward for it (hooks on the layer itself
    stay outside its checkpoint)."""
    model, tokenizer = load_tiny()
    torch.manual_seed(0)
    peft = get_peft_model(model, lora_config(CONFIG))
    with torch.no_grad():  # off the identity, so the KL has a gradient
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    if checkpointing:
        enable_activation_checkpointing(peft)
    calls = []
    peft.base_model.model.model.layers[0].input_layernorm.register_forward_pre_hook(lambda *_: calls.append(1))
    peft.train()
    encoded = [encode_example(tokenizer, e, CONFIG.max_seq_len) for e in examples]
    weights = example_weights(CONFIG, RISKS[: len(examples)])
    sums = accumulate_gradients(peft, tokenizer, encoded, list(range(len(encoded))), weights, len(encoded))
    return [p.grad for p in peft.parameters() if p.requires_grad], sums.loss, len(calls)


def test_activation_checkpointing_recomputes_and_gives_the_same_loss_and_gradients(load_tiny, chat_examples) -> None:
    plain, plain_loss, plain_calls = _step(load_tiny, chat_examples, checkpointing=False)
    checkpointed, loss, calls = _step(load_tiny, chat_examples, checkpointing=True)
    assert plain_calls == 2  # the reference's forward and the policy's
    assert calls == 3  # and the policy's again, recomputed in the backward pass
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    for a, b in zip(checkpointed, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_run_with_activation_checkpointing_and_dropout_has_the_runs_losses(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    """The recomputation draws LoRA dropout's masks again from the saved RNG state."""
    config = dataclasses.replace(CONFIG, lora_dropout=0.1)
    runs = {}
    for checkpointing in (False, True):
        model, tokenizer = load_tiny()
        metrics: list[StepMetrics] = []
        run_config = dataclasses.replace(config, activation_checkpointing=checkpointing)
        train(
            model,
            tokenizer,
            chat_examples,
            RISKS,
            run_config,
            work_dir=tmp_path / str(checkpointing),
            on_step=metrics.append,
        )
        runs[checkpointing] = [m.loss for m in metrics]
    assert len(runs[True]) == 3
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)


def test_lora_and_adams_state_stay_fp32_on_a_bf16_base(tiny_model: Path, chat_examples, tmp_path: Path) -> None:
    """The CUDA layout (``weight_dtype("cuda", True)``), trained on the CPU: PEFT upcasts the
    adapter of a half-precision base, and AdamW's moments follow their parameters."""
    from safetensors.torch import load_file

    from safety.base_models import load_base_model

    model, tokenizer = load_base_model(str(tiny_model), cache_dir=tmp_path, dtype=weight_dtype("cuda", True))
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    metrics: list[StepMetrics] = []
    config = dataclasses.replace(CONFIG, n_epochs=1)  # bf16 matmuls are slow on CPU: one step
    result = train(model, tokenizer, chat_examples, RISKS, config, work_dir=tmp_path / "run", on_step=metrics.append)
    lora = [p for name, p in result.model.named_parameters() if "lora_" in name]
    assert {p.dtype for p in lora} == {torch.float32}
    assert {p.dtype for name, p in result.model.named_parameters() if "lora_" not in name} == {torch.bfloat16}
    assert result.checkpoint_dir is not None
    state = load_file(str(result.checkpoint_dir / "optimizer.safetensors"))
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(m.loss)) for m in metrics)


@pytest.mark.cuda
def test_on_cuda_the_base_is_half_precision_and_lora_and_adam_stay_fp32(
    tiny_model: Path, chat_examples, tmp_path: Path, monkeypatch
) -> None:
    from safetensors.torch import load_file

    from tests.conftest import clear_caches
    from worker.pipeline.resources import load_model

    monkeypatch.setenv("GUARDTUNE_DEVICE", "cuda")
    monkeypatch.setenv("GUARDTUNE_MODEL_CACHE_DIR", str(tmp_path / "models"))
    clear_caches()
    try:
        model, tokenizer = load_model(str(tiny_model))
    finally:
        clear_caches()  # no later test reads these settings
    assert model.model.embed_tokens.weight.dtype == weight_dtype("cuda", torch.cuda.is_bf16_supported())
    config = dataclasses.replace(CONFIG, activation_checkpointing=True)
    result = train(model, tokenizer, chat_examples, RISKS, config, work_dir=tmp_path / "run")
    lora = [p for name, p in result.model.named_parameters() if "lora_" in name]
    assert {p.dtype for p in lora} == {torch.float32}
    assert result.checkpoint_dir is not None
    state = load_file(str(result.checkpoint_dir / "optimizer.safetensors"))
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


@pytest.mark.cuda
def test_qlora_loads_nf4_weights_and_trains_fp32_lora(tiny_model: Path, chat_examples, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from safety.base_models import load_base_model
    from safety.memory import device_weight_dtype

    model, tokenizer = load_base_model(
        str(tiny_model),
        cache_dir=tmp_path,
        dtype=device_weight_dtype("cuda"),
        quantization=quantization_config("4bit", "cuda"),
        device="cuda",
    )
    assert model.is_loaded_in_4bit
    metrics: list[StepMetrics] = []
    config = dataclasses.replace(CONFIG, activation_checkpointing=True)
    result = train(model, tokenizer, chat_examples, RISKS, config, work_dir=tmp_path / "run", on_step=metrics.append)
    lora = [p for name, p in result.model.named_parameters() if "lora_" in name]
    assert {p.dtype for p in lora} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(m.loss)) for m in metrics)


def test_onboarding_records_the_shape_the_memory_plan_reads(load_tiny) -> None:
    from core.jobs.memory_plan import ModelShape
    from safety.base_models import TinyModelSpec

    model, _ = load_tiny()
    shape = ModelShape.from_config(model.config.to_dict(), model.num_parameters())
    spec = TinyModelSpec()
    assert (shape.layers, shape.hidden_size, shape.intermediate_size) == (2, spec.hidden_size, spec.intermediate_size)
    assert shape.kv_size == spec.hidden_size // spec.num_attention_heads * spec.num_key_value_heads
    assert shape.vocab_size == model.config.vocab_size
    assert shape.parameters == sum(p.numel() for p in model.parameters())
