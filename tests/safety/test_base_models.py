"""Base-model resolution, loading and the tiny test model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from safety.base_models import (
    DEFAULT_BASE_MODEL,
    context_length,
    load_base_model,
    make_tiny_model,
    resolve_model_dir,
)


def test_tiny_model_loads_with_chat_template_and_pad(tiny_model: Path, tmp_path: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model), cache_dir=tmp_path)
    assert (tiny_model / "model.safetensors").is_file()
    assert tokenizer.pad_token_id is not None
    assert model.config.vocab_size == len(tokenizer)
    messages = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert context_length(model) == context_length(tokenizer) == 2048
    assert not model.training


def test_tiny_model_is_deterministic_in_seed(tiny_model: Path, tmp_path: Path) -> None:
    same = make_tiny_model(tmp_path / "same", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    load = lambda d: load_base_model(str(d), cache_dir=tmp_path)[0].model.embed_tokens.weight  # noqa: E731
    assert torch.equal(load(tiny_model), load(same))
    assert not torch.equal(load(tiny_model), load(other))


def test_resolve_local_dir_is_identity_and_unknown_names_fail(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_model_dir(str(tiny_model), tmp_path) == tiny_model
    with pytest.raises(ValueError, match="unknown base model"):
        resolve_model_dir("not-a-model", tmp_path)
    with pytest.raises(FileNotFoundError):
        resolve_model_dir(str(tmp_path), tmp_path)


@pytest.mark.slow
def test_default_model_converts_once_then_loads_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    model, tokenizer = load_base_model(DEFAULT_BASE_MODEL, cache_dir=tmp_path)
    converted_s = time.perf_counter() - started
    assert (tmp_path / DEFAULT_BASE_MODEL / "model.safetensors").is_file()
    assert not (tmp_path / DEFAULT_BASE_MODEL / "config.json").read_text().count("quantization_config")

    started = time.perf_counter()
    model, tokenizer = load_base_model(DEFAULT_BASE_MODEL, cache_dir=tmp_path)
    cached_s = time.perf_counter() - started
    print(f"GGUF conversion {converted_s:.1f}s, cached load {cached_s:.1f}s")
    assert cached_s < converted_s

    assert context_length(model) == 8192
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
