"""``worker.pipeline.resources.micro_batch_tokens``: the operator's token budget, else the
largest the memory plan fits in ``GUARDTUNE_WORKER_GPU_MEMORY_GB``, else none."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.jobs.memory_plan import GIB, ModelShape, training_memory, worker_layout
from core.settings import get_settings
from tests.conftest import clear_caches


@pytest.fixture
def tiny(tiny_model: Path):
    from safety.base_models import load_base_model

    return load_base_model(str(tiny_model), cache_dir=tiny_model.parent)[0]


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_MAX_EXAMPLE_TOKENS", "512")
    clear_caches()
    yield
    clear_caches()


def test_the_operators_budget_wins(tiny, monkeypatch) -> None:
    from worker.pipeline.resources import micro_batch_tokens

    monkeypatch.setenv("GUARDTUNE_MICRO_BATCH_TOKENS", "1000")
    monkeypatch.setenv("GUARDTUNE_WORKER_GPU_MEMORY_GB", "1")
    clear_caches()
    assert micro_batch_tokens(tiny, "supervised", exact_reference=False) == 1000


def test_without_a_budget_or_memory_the_batch_size_alone_bounds_a_micro_batch(tiny) -> None:
    from worker.pipeline.resources import micro_batch_tokens

    assert micro_batch_tokens(tiny, "supervised", exact_reference=False) is None


def test_with_the_workers_memory_the_largest_micro_batch_that_fits_is_picked(tiny, monkeypatch) -> None:
    from worker.pipeline.resources import micro_batch_tokens

    monkeypatch.setenv("GUARDTUNE_WORKER_GPU_MEMORY_GB", "2")
    clear_caches()
    picked = micro_batch_tokens(tiny, "supervised", exact_reference=True)
    assert picked is not None
    assert picked % 512 == 0  # whole examples at the token limit
    shape = ModelShape.from_config(tiny.config.to_dict(), tiny.num_parameters())
    layout = worker_layout(get_settings(), exact_reference=True)
    assert training_memory(shape, layout, picked).total <= 2 * GIB
    assert training_memory(shape, layout, picked + 512).total > 2 * GIB
    pairs = micro_batch_tokens(tiny, "dpo", exact_reference=True)  # a pair: two sequences at the limit
    assert pairs is not None
    assert pairs % 1024 == 0
    assert training_memory(shape, layout, pairs + 1024).total > 2 * GIB


def test_memory_for_not_even_one_example_still_trains_one_at_a_time(tiny, monkeypatch) -> None:
    from worker.pipeline.resources import micro_batch_tokens

    monkeypatch.setenv("GUARDTUNE_WORKER_GPU_MEMORY_GB", "0.01")
    clear_caches()
    assert micro_batch_tokens(tiny, "supervised", exact_reference=False) == 512
    assert micro_batch_tokens(tiny, "dpo", exact_reference=False) == 1024  # one pair
