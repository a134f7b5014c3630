"""Per-job compute bounds at create (``GUARDTUNE_MAX_JOB_STEPS``,
``GUARDTUNE_MAX_JOB_TRAINING_TOKENS``): a job over either is refused with 400 ``job_too_large``
naming the setting and its figures, and nothing is created; one within both is created."""

from __future__ import annotations

import openai
import pytest

from core.datasets import validate_chunks
from tests.api.helpers import BASE_MODEL, GOOD

EXAMPLES, TOKENS = 3, validate_chunks([GOOD]).est_tokens  # GOOD's size as the upload records it
MAX_STEPS, MAX_TOKENS = 2 * EXAMPLES, 2 * TOKENS  # two epochs at batch size 1: both limits exactly
API_ENV = {"GUARDTUNE_MAX_JOB_STEPS": str(MAX_STEPS), "GUARDTUNE_MAX_JOB_TRAINING_TOKENS": str(MAX_TOKENS)}


def create(client, training_file, n_epochs: int, batch_size: int):
    hyperparameters = {"n_epochs": n_epochs, "batch_size": batch_size}
    return client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=training_file.id, hyperparameters=hyperparameters
    )


def test_a_job_at_both_bounds_is_created(client, training_file):
    assert create(client, training_file, 2, 1).status == "validating_files"


def test_a_job_over_the_step_bound_is_refused_and_nothing_created(client, tenant, training_file, unchanged):
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        create(client, training_file, 3, 1)
    assert err.value.code == "job_too_large"
    assert err.value.param == "training_file"
    assert f"make {3 * EXAMPLES} training steps, above the limit of {MAX_STEPS} (GUARDTUNE_MAX_JOB_STEPS)" in str(
        err.value.message
    )


def test_a_job_over_the_token_bound_is_refused_and_nothing_created(client, tenant, training_file, unchanged):
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        create(client, training_file, 3, EXAMPLES)  # 3 steps: within the step bound
    assert err.value.code == "job_too_large"
    expected = f"make {3 * TOKENS} trained tokens, above the limit of {MAX_TOKENS} (GUARDTUNE_MAX_JOB_TRAINING_TOKENS)"
    assert expected in str(err.value.message)
