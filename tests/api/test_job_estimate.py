"""``POST /v1/fine_tuning/jobs?dry_run=true``: the create request checked as a create is,
answered with the job's estimate from the deployment's measured throughput; nothing created."""

from __future__ import annotations

import math
import time

import openai
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import File, Job, OutboxMessage, StageRun
from tests.api.helpers import BASE_MODEL, GOOD

STAGES = ["validate", "scan", "train", "evaluate", "gate", "release"]
DRY_RUN = {"dry_run": "true"}


@pytest.fixture(scope="module")
def client(sdk, tenant):
    return sdk(tenant)


@pytest.fixture(scope="module")
def training_file(client):
    return client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")


def outbox_rows(db, org_id: str) -> int:
    with Session(db) as session:
        jobs = select(Job.id).where(Job.org_id == org_id)
        return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.job_id.in_(jobs)))


def test_a_dry_run_answers_the_estimate_and_creates_nothing(client, tenant, training_file, unchanged, db):
    measured = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    with Session(db) as session, session.begin():  # every stage measured at least once
        for stage in STAGES:
            tokens = 30_000 if stage == "train" else None
            session.add(StageRun(job_id=measured.id, stage=stage, seconds=12.0, tokens=tokens, finished_at=time.time()))
    rows_before = outbox_rows(db, tenant.org_id)
    with unchanged(tenant):  # no job, event, audit record, stored object or queued task
        answer = client.fine_tuning.jobs.with_raw_response.create(
            model=BASE_MODEL,
            training_file=training_file.id,
            hyperparameters={"n_epochs": 3, "batch_size": 2},
            extra_query=DRY_RUN,
        )
    assert outbox_rows(db, tenant.org_id) == rows_before
    assert answer.http_response.status_code == 200
    body = answer.http_response.json()
    with Session(db) as session:
        upload = session.get_one(File, training_file.id)
    assert body["object"] == "fine_tuning.job.estimate"
    assert (body["model"], body["training_file"], body["method"]["type"]) == (
        BASE_MODEL,
        training_file.id,
        "supervised",
    )
    assert body["hyperparameters"]["n_epochs"] == 3
    assert body["examples"] == upload.n_examples == 3
    assert body["tokens"] == upload.n_tokens * 3
    assert body["steps"] == math.ceil(3 / 2) * 3
    assert list(body["stages"]) == STAGES
    assert all(seconds is not None and seconds > 0 for seconds in body["stages"].values())
    assert body["estimated_seconds"] == pytest.approx(sum(body["stages"].values()))
    assert body["tokens_per_second"] > 0
    assert body["measured_training_runs"] >= 1
    assert body["stages"]["train"] == pytest.approx(body["tokens"] / body["tokens_per_second"])
    assert body["safety"]["mode"] == "adaptive"


def test_a_dry_run_refuses_what_a_create_refuses(client, tenant, training_file, unchanged):
    with unchanged(tenant), pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file.id, extra_query=DRY_RUN)
    assert (err.value.code, err.value.param) == ("model_not_found", "model")
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=training_file.id, hyperparameters={"n_epochs": 0}, extra_query=DRY_RUN
        )
    assert err.value.param is not None
    assert "n_epochs" in err.value.param
