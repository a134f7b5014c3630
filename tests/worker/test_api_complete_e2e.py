"""Validation metrics, the step-metrics result file, and pause / resume, through the
official ``openai`` SDK on the real stack (uvicorn, Postgres, Redis, S3, a Celery worker
process), on the tiny model."""

from __future__ import annotations

import csv
import io
import time

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core.models import AuditRecord, Job
from tests.worker.conftest import DEMO
from tests.worker.jobs import all_events, finished, upload, wait_for

pytestmark = pytest.mark.slow  # whole jobs on the real stack, paused and resumed


@pytest.fixture(scope="module")
def db(stack_env):
    engine = create_engine(stack_env["GUARDTUNE_DATABASE_URL"])
    yield engine
    engine.dispose()


def metrics(client: OpenAI, job_id: str) -> list[dict]:
    return [e.data for e in all_events(client, job_id) if e.type == "metrics"]


def test_validation_metrics_and_step_metrics_result_file(client, worker, make_key):
    lines = DEMO.read_bytes().splitlines(keepends=True)
    valid = client.files.create(file=("valid.jsonl", b"".join(lines[30:36])), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(client, 16),
        validation_file=valid.id,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        seed=5,
    )
    job = finished(client, job.id)
    assert job.status == "succeeded", job.error

    data = metrics(client, job.id)
    assert [d["step"] for d in data] == [1, 2, 3, 4]
    assert all(0 <= d["train_mean_token_accuracy"] <= 1 for d in data)
    validated = {d["step"]: d for d in data if "valid_loss" in d}
    assert sorted(validated) == [2, 4]  # at each checkpoint (GUARDTUNE_CHECKPOINT_EVERY=2)
    assert all(d["valid_loss"] > 0 and 0 <= d["valid_mean_token_accuracy"] <= 1 for d in validated.values())
    assert "validation loss=" in next(
        e.message for e in all_events(client, job.id) if e.type == "metrics" and e.data["step"] == 2
    )

    checkpoints = {c.step_number: c.metrics for c in client.fine_tuning.jobs.checkpoints.list(job.id).data}
    assert sorted(checkpoints) == [2, 4]
    for step, m in checkpoints.items():
        assert (m.train_loss, m.train_mean_token_accuracy, m.valid_loss, m.valid_mean_token_accuracy) == (
            validated[step]["train_loss"],
            validated[step]["train_mean_token_accuracy"],
            validated[step]["valid_loss"],
            validated[step]["valid_mean_token_accuracy"],
        )

    [result_id] = job.result_files
    result = client.files.retrieve(result_id)
    assert (result.filename, result.purpose, result.status) == ("step_metrics.csv", "fine-tune-results", "processed")
    assert result_id in {f.id for f in client.files.list()}
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_id).read().decode())))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for row, d in zip(rows, data, strict=True):
        assert float(row["train_loss"]) == d["train_loss"]
        assert float(row["train_accuracy"]) == d["train_mean_token_accuracy"]
        if d["step"] in validated:
            assert float(row["valid_loss"]) == d["valid_loss"]
            assert float(row["valid_mean_token_accuracy"]) == d["valid_mean_token_accuracy"]
        else:
            assert row["valid_loss"] == row["valid_mean_token_accuracy"] == ""
    other_org = OpenAI(base_url=str(client.base_url), api_key=make_key(f"e2e-other-{time.monotonic_ns()}")[2])
    with pytest.raises(openai.NotFoundError):  # the organization's own file
        other_org.files.content(result_id)


def long_job(client: OpenAI, file_id: str) -> str:
    return client.fine_tuning.jobs.create(
        model="tiny", training_file=file_id, seed=11, hyperparameters={"n_epochs": 3, "batch_size": 4}
    ).id


def test_pause_frees_the_worker_and_resume_is_bit_identical(api, client, worker, db):
    file_id = upload(client, 48)  # 12 steps per epoch, 36 in all
    job_id = long_job(client, file_id)
    wait_for(lambda: len(metrics(client, job_id)) >= 3, 240, "training steps")
    paused = client.fine_tuning.jobs.pause(job_id)
    assert paused.status == "paused"
    assert paused.estimated_finish is None
    assert client.fine_tuning.jobs.pause(job_id).status == "paused"  # idempotent
    stop = wait_for(
        lambda: next((e for e in all_events(client, job_id) if e.message.startswith("Training paused at step")), None),
        60,
        "training to pause",
    )
    paused_at = int(stop.message.split("step ")[1].split()[0])
    assert 3 <= paused_at < 36
    assert paused_at in [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id).data]
    with Session(db) as session:
        assert session.get(Job, job_id).worker_id is None  # the lease is given back

    # The worker is free: a second job runs to the end while the first stays paused.
    other = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, 8), hyperparameters={"n_epochs": 1}
    )
    assert finished(client, other.id).status == "succeeded"
    assert client.fine_tuning.jobs.retrieve(job_id).status == "paused"
    assert max(d["step"] for d in metrics(client, job_id)) == paused_at  # nothing trained meanwhile

    jobs = client.fine_tuning.jobs
    for call, code in ((jobs.pause, "job_not_pausable"), (jobs.resume, "job_not_paused")):  # a finished job: 400
        with pytest.raises(openai.BadRequestError) as err:
            call(other.id)
        assert err.value.code == code
        assert "already succeeded" in err.value.message

    resumed = client.fine_tuning.jobs.resume(job_id)
    assert resumed.status == "queued"
    with pytest.raises(openai.BadRequestError) as err:  # no longer paused
        client.fine_tuning.jobs.resume(job_id)
    assert err.value.code == "job_not_paused"
    job = finished(client, job_id, timeout_s=300)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in all_events(client, job_id)]
    assert f"Resumed training from the checkpoint at step {paused_at}" in messages

    # The same job never paused: every step's loss is exactly the same.
    baseline = finished(client, long_job(client, file_id), timeout_s=300)
    assert baseline.status == "succeeded", baseline.error
    losses = [(d["step"], d["train_loss"], d["train_mean_token_accuracy"]) for d in metrics(client, job_id)]
    assert [s for s, _, _ in losses] == list(range(1, 37))
    assert losses == [
        (d["step"], d["train_loss"], d["train_mean_token_accuracy"]) for d in metrics(client, baseline.id)
    ]
    digests = [
        httpx.get(
            f"{api.base_url}/v1/models/{j.fine_tuned_model}/adapter",
            timeout=60,
            headers={"Authorization": f"Bearer {client.api_key}"},
        ).headers["X-Guardtune-Adapter-Sha256"]
        for j in (job, baseline)
    ]
    assert digests[0] == digests[1]  # the same adapter, byte for byte
    with Session(db) as session:
        actions = list(
            session.scalars(select(AuditRecord.action).where(AuditRecord.target == job_id).order_by(AuditRecord.seq))
        )
    assert actions.count("job.pause") == 1
    assert actions.count("job.resume") == 1
    assert actions.index("job.pause") < actions.index("job.resume") < actions.index("job.succeeded")
