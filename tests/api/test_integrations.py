"""OpenAI's ``integrations`` on a deployment with W&B configured (offline here): a job's W&B
integration is accepted, stored and echoed in OpenAI's shape; malformed ones are 400. (Without
a key, W&B is refused: ``tests/api/test_jobs.py``'s invalid parameters.)"""

from __future__ import annotations

import openai
import pytest

from tests.api.helpers import BASE_MODEL

API_ENV = {"GUARDTUNE_WANDB_MODE": "offline"}


def test_a_wandb_integration_is_echoed_in_openais_shape(client, training_file):
    wandb = {"project": "support-bot", "name": "run-1", "entity": "acme", "tags": ["v1", "helpdesk"]}
    job = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=training_file.id, integrations=[{"type": "wandb", "wandb": wandb}]
    )
    for seen in (job, client.fine_tuning.jobs.retrieve(job.id)):
        [integration] = seen.integrations
        assert integration.type == "wandb"
        assert integration.wandb.model_dump() == wandb
    minimal = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=training_file.id, integrations=[{"type": "wandb", "wandb": {"project": "p"}}]
    )
    assert minimal.integrations[0].wandb.model_dump() == {"project": "p", "name": None, "entity": None, "tags": None}
    assert client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id).integrations == []


@pytest.mark.parametrize(
    "integrations",
    [
        [{"type": "slack", "wandb": {"project": "p"}}],
        [{"type": "wandb"}],
        [{"type": "wandb", "wandb": {"name": "no project"}}],
        [{"type": "wandb", "wandb": {"project": "p", "api_key": "mine"}}],
        [{"type": "wandb", "wandb": {"project": "p"}}] * 2,
    ],
)
def test_a_malformed_integration_is_400(client, tenant, training_file, unchanged, integrations):
    body = {"model": BASE_MODEL, "training_file": training_file.id, "integrations": integrations}
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.post("/fine_tuning/jobs", body=body, cast_to=dict)
    assert err.value.param.startswith("integrations"), err.value.message
