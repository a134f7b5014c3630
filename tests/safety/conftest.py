"""Shared fixtures for the safety tests: a tiny random Llama with the real SmolLM2 chat tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from safety.base_models import load_base_model, make_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny randomly initialised LlamaForCausalLM (seed 0) + chat tokenizer.

    Built once per session; treat it as read-only (load a fresh model from it per test).
    """
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def load_tiny(tiny_model_dir: Path) -> Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]:
    """Load a fresh copy of the tiny model + tokenizer (training modifies a model in place)."""
    return lambda: load_base_model(str(tiny_model_dir), cache_dir=tiny_model_dir.parent)


@pytest.fixture
def chat_examples() -> list[dict]:
    """Eight short OpenAI chat examples (one multi-turn, one prompt/completion)."""
    examples: list[dict] = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}."},
            ]
        }
        for i in range(6)
    ]
    examples.append(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one."},
                {"role": "assistant", "content": "Green."},
            ]
        }
    )
    examples.append({"prompt": "Say hello.", "completion": "Hello!"})
    return examples
