"""The official ``openai`` SDK against the live server (uvicorn, Postgres, S3, Redis):
every call of the fine-tuning workflow parses, and each leaves the state it should."""

from __future__ import annotations

import pytest
from openai.types import FileObject, Model
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from sqlalchemy.orm import Session

from core.models import Checkpoint, File, Job, JobEvent
from tests.api.helpers import BASE_MODEL, GOOD, audit_actions, queued_job_ids, set_job

pytestmark = pytest.mark.transport("uvicorn")  # the SDK's whole flow on the real server


@pytest.fixture(scope="module")
def uploaded(client) -> FileObject:
    return client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")


def test_upload_is_validated_stored_and_audited(client, uploaded, tenant, db, store):
    assert isinstance(uploaded, FileObject)
    assert uploaded.id.startswith("file-")
    assert uploaded.object == "file"
    assert uploaded.purpose == "fine-tune"
    assert uploaded.status == "processed"
    assert uploaded.status_details is None
    assert uploaded.bytes == len(GOOD)
    assert uploaded.filename == "train.jsonl"

    with Session(db) as session:
        row = session.get(File, uploaded.id)
        assert row.org_id == tenant.org_id
        assert row.n_examples == 3
    assert store.list(f"orgs/{tenant.org_id}/files/") == [f"orgs/{tenant.org_id}/files/{uploaded.id}"]
    assert b"".join(store.iter_chunks(row.storage_key)) == GOOD
    assert audit_actions(db, uploaded.id) == ["file.upload"]

    assert client.files.retrieve(uploaded.id) == uploaded
    assert [f.id for f in client.files.list()] == [uploaded.id]
    assert client.files.content(uploaded.id).read() == GOOD


def test_fine_tuning_workflow(client, uploaded, tenant, db, broker):
    job = client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=uploaded.id,
        suffix="support-bot",
        seed=42,
        metadata={"team": "support"},
        extra_body={"safety": {"mode": "adaptive", "estimator": "probe", "kl_weight": {"min": 0.2, "max": 1.0}}},
    )
    assert isinstance(job, FineTuningJob)
    assert job.id.startswith("ftjob-")
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.model == BASE_MODEL
    assert job.training_file == uploaded.id
    assert job.validation_file is None
    assert job.organization_id == tenant.org_id
    assert job.seed == 42
    assert job.metadata == {"team": "support"}
    assert job.user_provided_suffix == "support-bot"
    assert job.error is None
    assert job.fine_tuned_model is None
    assert job.finished_at is None
    assert job.result_files == []
    assert job.integrations == []
    assert job.trained_tokens is None
    # "auto" resolved from the 3 examples: enough epochs to see 100 examples (capped at 25),
    # batch size capped by the dataset, learning-rate multiplier 1.
    assert job.hyperparameters.n_epochs == 25
    assert job.hyperparameters.batch_size == 3
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.model_dump() == job.hyperparameters.model_dump()
    safety = job.model_extra["safety"]
    assert safety["mode"] == "adaptive"
    assert safety["estimator"] == "probe"
    assert safety["kl_weight"] == {"min": 0.2, "max": 1.0}
    assert safety["constant_kl_weight"] == 0.5
    assert safety["stage"] is None
    assert safety["gate"] is None

    # committed, audited, then handed to the pipeline by name with the job id
    with Session(db) as session:
        row = session.get(Job, job.id)
        assert row.status == "validating_files"
        assert row.safety["kl_weight"] == {"min": 0.2, "max": 1.0}
    assert audit_actions(db, job.id) == ["job.create"]
    assert job.id in queued_job_ids(broker)

    assert client.fine_tuning.jobs.retrieve(job.id) == job
    listed = client.fine_tuning.jobs.list()
    assert [j.id for j in listed.data] == [job.id]
    assert listed.has_more is False

    events = client.fine_tuning.jobs.list_events(job.id)
    assert all(isinstance(e, FineTuningJobEvent) for e in events.data)
    assert [e.message for e in events.data] == [
        f"Validating training file: {uploaded.id}",
        f"Created fine-tuning job: {job.id}",
    ]  # newest first, as OpenAI

    # the worker's side, simulated: running, a metrics event and a checkpoint
    set_job(db, job.id, status="running", stage="training")
    with Session(db) as session, session.begin():
        session.add(
            JobEvent(
                id="ftevent-metrics1",
                job_id=job.id,
                type="metrics",
                message="Step 20/60: training loss=1.23",
                data={"step": 20, "train_loss": 1.23, "kl": 0.04, "kl_weight": 0.35, "risk": 3.05},
            )
        )
        session.add(
            Checkpoint(
                id="ftckpt-a1",
                job_id=job.id,
                step=20,
                storage_prefix=f"orgs/{tenant.org_id}/jobs/{job.id}/ckpt-20",
                metrics={"train_loss": 1.23, "kl": 0.04},
            )
        )
    metrics = client.fine_tuning.jobs.list_events(job.id, limit=1)
    assert metrics.has_more is True
    assert metrics.data[0].type == "metrics"
    assert metrics.data[0].data["kl_weight"] == 0.35

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert len(checkpoints.data) == 1
    checkpoint = checkpoints.data[0]
    assert isinstance(checkpoint, FineTuningJobCheckpoint)
    assert checkpoint.step_number == 20
    assert checkpoint.fine_tuning_job_id == job.id
    assert checkpoint.metrics.train_loss == 1.23
    assert checkpoint.metrics.step == 20
    assert checkpoint.fine_tuned_model_checkpoint == (
        f"ft:{BASE_MODEL}:{tenant.org_id}:support-bot:{job.id}:ckpt-step-20"
    )
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running"
    assert running.model_extra["safety"]["stage"] == "training"

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert isinstance(cancelled, FineTuningJob)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    with Session(db) as session:
        assert session.get(Job, job.id).cancel_requested is True  # the worker stops at its next step
    again = client.fine_tuning.jobs.cancel(job.id)  # idempotent
    assert again.status == "cancelled"
    assert again.finished_at == cancelled.finished_at
    assert audit_actions(db, job.id) == ["job.create", "job.cancel"]  # the repeat changed nothing
    assert client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message == "Fine-tuning job cancelled."


def test_models_list(client):
    models = client.models.list()
    assert all(isinstance(m, Model) for m in models.data)
    assert BASE_MODEL in {m.id for m in models.data}
    base = client.models.retrieve(BASE_MODEL)
    assert base.id == BASE_MODEL
    assert base.object == "model"
    assert base.owned_by == "system"


def test_files_delete(client, tenant, db, store):
    extra = client.files.create(file=("extra.jsonl", GOOD), purpose="fine-tune")
    key = f"orgs/{tenant.org_id}/files/{extra.id}"
    assert store.exists(key)
    deleted = client.files.delete(extra.id)
    assert deleted.id == extra.id
    assert deleted.deleted is True
    assert not store.exists(key)
    assert audit_actions(db, extra.id) == ["file.upload", "file.delete"]
    assert extra.id not in {f.id for f in client.files.list()}
    import openai

    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(extra.id)
