"""``model="ft:…"``: a job continues training from a released model of the caller's
organization; its base model stays the job's base (the safety reference and the gate's
baseline). Another organization's, a revoked, a blocked or an unknown ``ft:`` model is 400."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy.orm import Session

from core.audit.repository import AuditRepository
from core.models import Job
from core.releases import service as releases
from tests.api.helpers import BASE_MODEL, GOOD
from tests.api.test_models import finished_job


@pytest.fixture(scope="module")
def released(client, db, store) -> str:
    return finished_job(client, db, store, suffix="first", release=True)[1]


def test_a_released_model_of_the_organization_is_trained_further(client, db, released):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=released, training_file=f.id, suffix="second")
    assert job.model == released  # echoed as asked, as OpenAI does
    assert client.fine_tuning.jobs.retrieve(job.id).model == released
    with Session(db) as session:
        row = session.get(Job, job.id)
        assert (row.model, row.parent_model) == (BASE_MODEL, released)  # the base stays the reference
        assert AuditRepository(session).details_of("job.create", job.id)["parent_model"] == released


def test_a_model_training_cannot_continue_from_is_400(
    client, sdk, other_tenant, db, store, tenant, released, unchanged
):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    revoked = finished_job(client, db, store, suffix="gone", release=True)[1]
    with Session(db) as session, session.begin():
        releases.revoke_model(session, revoked, actor="ops:test", reason="unsafe")
    blocked_job, _ = finished_job(client, db, store, suffix="blocked", release=False)
    other = sdk(other_tenant)
    theirs = other.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    cases = [
        (client, f.id, tenant, revoked),
        (client, f.id, tenant, f"ft:{BASE_MODEL}:{tenant.org_id}:blocked:{blocked_job}"),
        (client, f.id, tenant, f"ft:{BASE_MODEL}:{tenant.org_id}::ftjob-unknown"),
        (other, theirs.id, other_tenant, released),  # another organization's model
    ]
    for caller, file_id, who, model in cases:
        with unchanged(who), pytest.raises(openai.BadRequestError) as err:
            caller.fine_tuning.jobs.create(model=model, training_file=file_id)
        assert (err.value.code, err.value.param) == ("invalid_model", "model"), model
        assert "not a released, unrevoked model of your organization" in err.value.message
