"""``GUARDTUNE_WORKER_GPU_MEMORY_GB`` at job create: a base model whose training cannot fit a
worker (``core.jobs.memory_plan``) is refused with 400 naming the model, the budget and the
estimate; one that fits, and one onboarded before its shape was recorded, are created."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy.orm import Session

from core.models import BaseModelEntry
from tests.api.helpers import BASE_MODEL
from tests.api.test_preference import PAIRS

API_ENV = {"GUARDTUNE_WORKER_GPU_MEMORY_GB": "24", "GUARDTUNE_DEVICE": "cuda"}  # 24 GB GPUs, bf16 + checkpointing

SHAPES = {  # Llama 3: 8 key-value heads of 128, a vocabulary of 128256
    "api-test-70b": {"parameters": 70_550_000_000, "layers": 80, "hidden_size": 8192, "intermediate_size": 28672},
    "api-test-8b": {"parameters": 8_030_000_000, "layers": 32, "hidden_size": 4096, "intermediate_size": 14336},
}


@pytest.fixture(scope="module")
def shaped_models(db) -> Iterator[None]:
    """Two onboarded base models whose baselines record their shapes."""
    with Session(db) as session, session.begin():
        for name, shape in SHAPES.items():
            baseline = {"shape": {**shape, "vocab_size": 128256, "kv_size": 1024}}
            session.add(BaseModelEntry(id=name, source=name, status="ready", context_length=8192, baseline=baseline))
    yield
    with Session(db) as session, session.begin():
        for name in SHAPES:
            session.delete(session.get(BaseModelEntry, name))


def test_a_base_too_big_for_the_workers_is_refused_at_create(client, tenant, training_file, unchanged, shaped_models):
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="api-test-70b", training_file=training_file.id)
    assert err.value.code == "insufficient_worker_memory"
    assert err.value.param == "model"
    message = err.value.message
    assert "'api-test-70b'" in message
    assert "24 GB" in message
    assert "GUARDTUNE_WORKER_GPU_MEMORY_GB" in message
    estimate = re.search(r"needs an estimated (\d+\.\d) GB", message)
    assert estimate is not None
    assert float(estimate.group(1)) > 24


def test_a_base_that_fits_the_workers_is_created(client, training_file, shaped_models):
    job = client.fine_tuning.jobs.create(model="api-test-8b", training_file=training_file.id)
    assert job.status == "validating_files"
    assert job.model == "api-test-8b"


def test_a_dpo_job_whose_pairs_do_not_fit_is_refused_where_its_sft_job_fits(
    client, tenant, training_file, unchanged, shaped_models
):
    """On 24 GB an 8B base trains one 2048-token example, but a DPO pair is two sequences."""
    pairs = client.files.create(file=("pairs.jsonl", PAIRS), purpose="fine-tune")
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="api-test-8b", training_file=pairs.id, method={"type": "dpo"})
    assert err.value.code == "insufficient_worker_memory"
    assert "one preference pair of two sequences of 2048 tokens" in err.value.message
    assert client.fine_tuning.jobs.create(model="api-test-8b", training_file=training_file.id).status


def test_a_base_without_a_recorded_shape_is_not_checked(client, training_file):
    assert client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id).model == BASE_MODEL
