"""An operator who lists ``none`` in ``GUARDTUNE_ALLOWED_MODES`` opens plain SFT to customer keys."""

from __future__ import annotations

import openai
import pytest

from tests.api.helpers import BASE_MODEL, GOOD

API_ENV = {"GUARDTUNE_ALLOWED_MODES": '["adaptive", "none"]'}


def test_modes_follow_the_operators_list(sdk, tenant, unchanged):
    client = sdk(tenant)
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "none"}})
    assert job.model_extra["safety"]["mode"] == "none"
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:  # not listed by this operator
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "constant"}})
    assert (err.value.param, err.value.code) == ("safety.mode", "safety_policy")
    assert "GUARDTUNE_ALLOWED_MODES=adaptive,none" in err.value.message
