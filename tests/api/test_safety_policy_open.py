"""An operator who lists ``none`` in ``GUARDTUNE_ALLOWED_MODES`` opens plain SFT to customer
keys; one who sets ``GUARDTUNE_JUDGE_LOCAL_MODEL`` (and no endpoint) offers ``estimator: judge``."""

from __future__ import annotations

import openai
import pytest

from tests.api.helpers import BASE_MODEL, GOOD

API_ENV = {"GUARDTUNE_ALLOWED_MODES": '["adaptive", "none"]', "GUARDTUNE_JUDGE_LOCAL_MODEL": "smollm2-135m-instruct"}


def test_modes_follow_the_operators_list(sdk, tenant, unchanged):
    client = sdk(tenant)
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "none"}})
    assert job.model_extra["safety"]["mode"] == "none"
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:  # not listed by this operator
        client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "constant"}}
        )
    assert (err.value.param, err.value.code) == ("safety.mode", "safety_policy")
    assert "GUARDTUNE_ALLOWED_MODES=adaptive,none" in err.value.message


def test_estimator_judge_is_offered_with_a_local_judge_model(sdk, tenant):
    client = sdk(tenant)
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    for estimator in ("judge", "both"):
        job = client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"estimator": estimator}}
        )
        assert job.model_extra["safety"]["estimator"] == estimator
