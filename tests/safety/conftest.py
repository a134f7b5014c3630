"""Shared fixtures for the safety tests: a tiny random Llama with the real SmolLM2 chat tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from safety.base_models import load_base_model

torch.set_num_threads(1)


@pytest.fixture
def load_tiny(tiny_model: Path) -> Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]:
    """Load a fresh copy of the tiny model + tokenizer (training modifies a model in place)."""
    return lambda: load_base_model(str(tiny_model), cache_dir=tiny_model.parent)


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
