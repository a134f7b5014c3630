"""Transient faults re-queue a stage instead of failing the job: object storage that refuses
connections (a real S3 server, moto, stopped and started again on its port) releases the
lease and queues the stage after a backoff, counted like a worker loss; when storage is back
the stage runs; past the bound the job fails with a generic message naming the request id,
while the log keeps the exception. A full disk (``/dev/full``) is retried too; database errors are classified alike."""

from __future__ import annotations

import errno
import time

import pytest
import structlog
from sqlalchemy import select

from tests.conftest import clear_caches, free_port
from tests.worker.conftest import create_job, demo_lines

BUCKET = "guardtune-outage"


class StoppableS3:
    """A moto S3 server on a fixed port that can be stopped (connections refused) and started
    again with its objects (moto keeps them in this process)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def outage_env(pipeline_env, monkeypatch):
    """The embedded stack with its object store on a stoppable S3 server."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = StoppableS3()
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("GUARDTUNE_STORAGE_URL", f"s3://{BUCKET}")
    monkeypatch.setenv("GUARDTUNE_S3_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("GUARDTUNE_RETRY_BACKOFF_S", "0.5")
    clear_caches()
    yield s3
    s3.stop()


def queued_validate(org_id: str, request_id: str) -> tuple[str, str]:
    """A job waiting for its validate stage, as the API leaves it: ``(job id, outbox row id)``."""
    from core import outbox
    from core.db import session_scope
    from core.jobs.pipeline import Stage

    with session_scope() as session, structlog.contextvars.bound_contextvars(request_id=request_id):
        job_id = create_job(session, org_id, demo_lines(4))
        row = outbox.add(session, job_id, Stage.VALIDATE.task, Stage.VALIDATE.queue)
    return job_id, row.id


def newest_row(job_id: str):
    from core import outbox
    from core.db import session_scope

    with session_scope() as session:
        return outbox.latest(session, job_id)


def job_row(job_id: str):
    from core.db import session_scope
    from core.models import Job

    with session_scope() as session:
        return session.get(Job, job_id)


def test_a_storage_outage_requeues_the_stage_which_runs_when_storage_is_back(outage_env):
    from core.db import session_scope
    from core.models import JobEvent
    from worker.pipeline.reaper import reap
    from worker.tasks import run_stage

    job_id, message_id = queued_validate("org-outage", "req_outage1")
    outage_env.stop()
    assert run_stage("validate", job_id, message_id) is None
    job = job_row(job_id)
    assert job.status == "validating_files"
    assert job.error is None
    assert job.attempts == 1
    assert job.worker_id is None  # the lease is released
    retry = newest_row(job_id)
    assert retry.id != message_id
    assert retry.sent_at is None
    assert retry.not_before > time.time()
    assert retry.task == "guardtune.pipeline.validate"
    with session_scope() as session:
        messages = list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))
    assert messages[-1] == "Stage 'validate' was interrupted (storage unavailable); retrying in 0.5 s (retry 1 of 2)"
    assert job_id not in [a["job_id"] for a in reap()]  # still waiting out its backoff
    outage_env.start()
    time.sleep(0.6)
    assert {"job_id": job_id, "action": "sent", "task": retry.task} in reap()
    assert newest_row(job_id).sent_at is not None
    assert run_stage("validate", job_id, retry.id) == "scan"
    assert job_row(job_id).error is None


def test_past_the_bound_the_job_fails_with_a_generic_message_naming_the_request(outage_env, capfd):
    from worker.tasks import run_stage

    job_id, message_id = queued_validate("org-outage-2", "req_outage2")
    outage_env.stop()
    assert run_stage("validate", job_id, message_id) is None
    assert run_stage("validate", job_id, newest_row(job_id).id) is None  # the retry, storage still down
    assert run_stage("validate", job_id, newest_row(job_id).id) is None
    job = job_row(job_id)
    assert job.status == "failed"
    assert job.error["code"] == "service_unavailable"
    assert job.error["message"] == (
        "Stage 'validate' could not complete: a service it depends on was unavailable 3 times. "
        "Quote request id req_outage2 to support."
    )
    assert job.worker_id is None
    log = capfd.readouterr().err
    assert "stage_interrupted" in log
    assert "EndpointConnectionError" in log  # the detail stays in the log
    assert outage_env.endpoint in log


def test_an_unexpected_error_shows_the_customer_no_internals(pipeline_env, monkeypatch, capfd):
    from core.jobs.pipeline import Stage
    from worker.tasks import STAGES, run_stage

    def broken(job_id: str) -> None:
        raise RuntimeError("secret internal detail at /var/lib/guardtune/work")

    monkeypatch.setitem(STAGES, Stage.VALIDATE, broken)
    job_id, message_id = queued_validate("org-broken", "req_broken")
    assert run_stage("validate", job_id, message_id) is None
    job = job_row(job_id)
    assert job.error["code"] == "internal_error"
    assert (
        job.error["message"]
        == "Stage 'validate' failed with an internal error. Quote request id req_broken to support."
    )
    assert "secret internal detail" in capfd.readouterr().err


def test_a_full_disk_requeues_the_stage(pipeline_env, monkeypatch):
    """A stage whose write fails with a real ENOSPC (``/dev/full``) is retried, not failed."""
    from core.jobs.pipeline import Stage
    from worker.tasks import STAGES, run_stage

    def writes_to_a_full_disk(job_id: str) -> None:
        with open("/dev/full", "wb") as out:
            out.write(b"checkpoint bytes")
            out.flush()

    monkeypatch.setitem(STAGES, Stage.VALIDATE, writes_to_a_full_disk)
    job_id, message_id = queued_validate("org-full", "req_full")
    assert run_stage("validate", job_id, message_id) is None
    job = job_row(job_id)
    assert job.error is None
    assert job.attempts == 1
    assert newest_row(job_id).not_before is not None


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk"),
        (OSError(errno.ENOENT, "No such file or directory"), None),
        (ValueError("bad data"), None),
    ],
    ids=["enospc", "edquot", "enoent", "value-error"],
)
def test_disk_errors_are_classified(error, fault):
    from worker.pipeline.transient import transient_fault

    assert transient_fault(error) == fault


def test_a_database_error_raised_through_another_is_transient(tmp_path):
    """A real connection failure (a Postgres port nobody listens on), wrapped as a stage might wrap it."""
    from sqlalchemy import create_engine, text

    from worker.pipeline.transient import transient_fault

    engine = create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", connect_args={"connect_timeout": 2}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        try:
            raise RuntimeError("while saving the checkpoint") from exc
        except RuntimeError as wrapped:
            assert transient_fault(wrapped) == "database"
    else:
        pytest.fail("connected to a port nobody listens on")


def test_an_s3_server_error_is_transient_and_a_client_error_is_not():
    from botocore.exceptions import ClientError

    from worker.pipeline.transient import transient_fault

    def error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert transient_fault(error(503, "SlowDown")) == "storage"
    assert transient_fault(error(500, "InternalError")) == "storage"
    assert transient_fault(error(404, "NoSuchKey")) is None
