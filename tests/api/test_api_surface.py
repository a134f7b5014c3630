"""The rest of OpenAI's fine-tuning surface through the official SDK on the live server:
``jobs.list(metadata=…)`` filters, ``models.delete`` (= revoke), ``x-request-id`` on every
response (and in logs and audit records), and a clear 400 for a body that is not JSON."""

from __future__ import annotations

import re
import time

import openai
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.jobs.repository import JobRepository
from core.models import AuditRecord, Job, ReleasedModel
from core.releases import digests
from tests.api.helpers import BASE_MODEL, GOOD, audit_actions, auth, set_job
from tests.api.test_models import finished_job


def audit_rows(db, target: str) -> list[AuditRecord]:
    with Session(db) as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.target == target).order_by(AuditRecord.seq)))


# -- jobs.list(metadata=…) -------------------------------------------------------------------
def test_jobs_list_filters_by_metadata(sdk, new_tenant):
    client = sdk(new_tenant())
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    tagged = {}
    for name, metadata in [
        ("a1", {"team": "a", "run": "1", 'odd"key.x': "y"}),
        ("a2", {"team": "a", "run": "2"}),
        ("b1", {"team": "b", "run": "1"}),
        ("blank", {"team": ""}),
        ("none", None),
    ]:
        job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, metadata=metadata)
        client.fine_tuning.jobs.cancel(job.id)  # stay under the concurrent-jobs limit
        tagged[name] = job.id

    def ids(**kwargs) -> list[str]:
        return [j.id for j in client.fine_tuning.jobs.list(limit=100, **kwargs)]

    assert ids(metadata={"team": "a"}) == [tagged["a2"], tagged["a1"]]  # newest first
    assert ids(metadata={"team": "a", "run": "1"}) == [tagged["a1"]]  # keys are AND-ed
    assert ids(metadata={"run": "1"}) == [tagged["b1"], tagged["a1"]]
    assert ids(metadata={"team": "c"}) == []
    assert ids(metadata={'odd"key.x': "y"}) == [tagged["a1"]]  # a key is a key, not a JSON path
    assert ids(metadata={"team": ""}) == [tagged["blank"]]  # an empty value matches an empty value
    assert ids(extra_query={"metadata": "null"}) == [tagged["none"]]  # OpenAI's literal for "no metadata"
    assert len(ids()) == 5
    assert ids(metadata={}) == ids()
    page = client.fine_tuning.jobs.list(limit=1, metadata={"team": "a"})
    assert [j.id for j in page.data] == [tagged["a2"]]
    assert page.has_more
    after = client.fine_tuning.jobs.list(limit=1, after=tagged["a2"], metadata={"team": "a"})
    assert [j.id for j in after.data] == [tagged["a1"]]
    assert not after.has_more


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("metadata=team", "metadata"),
        ("metadata[team=a", "metadata[team"),
        ("metadata[]=a", "metadata[]"),
        ("metadata[a][b]=1", "metadata[a][b]"),
        ("metadata[team]=a&metadata[team]=b", "metadata[team]"),
        ("metadata[" + "k" * 65 + "]=v", "metadata[" + "k" * 65 + "]"),
    ],
)
def test_malformed_metadata_filters_are_refused(http, tenant, query, param):
    r = http.get(f"/v1/fine_tuning/jobs?{query}", headers=auth(tenant))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_metadata_filter"
    assert error["param"] == param
    assert param in error["message"]


# -- malformed JSON ------------------------------------------------------------------------
def test_a_body_that_is_not_json_answers_400_saying_so(http, tenant, unchanged):
    with unchanged(tenant):
        r = http.post(
            "/v1/fine_tuning/jobs",
            content=b'{"model": "smollm2-135m-instruct", "training_file": ',
            headers={**auth(tenant), "Content-Type": "application/json"},
        )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    assert error["param"] is None
    assert "could not parse the JSON body" in error["message"]
    assert "Expecting value at character 52" in error["message"]


# -- models.delete --------------------------------------------------------------------------
def test_models_delete_revokes_the_owners_fine_tuned_model(client, sdk, other_tenant, tenant, db, store, http):
    job_id, model_id = finished_job(client, db, store, suffix="to-delete", release=True)
    job_objects = digests.job_dir(tenant.org_id, job_id)
    assert store.list(job_objects)  # its adapter
    with pytest.raises(openai.NotFoundError) as err:  # another organization cannot even see it
        sdk(other_tenant).models.delete(model_id)
    assert err.value.code == "model_not_found"
    assert model_id in {m.id for m in client.models.list()}

    deleted = client.models.delete(model_id)
    assert (deleted.id, deleted.object, deleted.deleted) == (model_id, "model", True)
    assert model_id not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model_id)
    assert http.get(f"/v1/models/{model_id}/adapter", headers=auth(tenant)).status_code == 404
    assert store.list(job_objects) == []  # the adapter and every other object of its job went with it
    with Session(db) as session:
        row = session.get(ReleasedModel, model_id)
        assert row.revoked_at is not None
        assert "DELETE /v1/models" in row.revoke_reason
    revoke = [r for r in audit_rows(db, model_id) if r.action == "model.revoke"]
    assert len(revoke) == 1
    assert revoke[0].actor == f"key:{tenant.key_id}"
    assert revoke[0].details["request_id"] == deleted._request_id

    with pytest.raises(openai.NotFoundError):  # already deleted
        client.models.delete(model_id)
    assert audit_actions(db, model_id).count("model.revoke") == 1


def test_base_and_unknown_models_cannot_be_deleted(client, tenant, unchanged):
    with unchanged(tenant), pytest.raises(openai.PermissionDeniedError) as err:
        client.models.delete(BASE_MODEL)
    assert err.value.code == "model_not_deletable"
    assert BASE_MODEL in {m.id for m in client.models.list()}
    with unchanged(tenant), pytest.raises(openai.NotFoundError):
        client.models.delete("ft:nothing:here")


# -- x-request-id ---------------------------------------------------------------------------
@pytest.mark.transport("uvicorn")  # reads the server's log
def test_every_response_carries_a_request_id(client, http, live_api, tenant, db):
    uploaded = client.files.with_raw_response.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    generated = uploaded.headers["x-request-id"]
    assert generated.startswith("req_")
    assert len(generated) == 36
    assert uploaded.parse()._request_id == generated  # the SDK's request_id
    file_id = uploaded.parse().id
    [record] = audit_rows(db, file_id)
    assert record.details["request_id"] == generated

    mine = "client-trace.42:abc"
    assert client.files.retrieve(file_id, extra_headers={"x-request-id": mine})._request_id == mine
    for insane in ("has spaces", "x" * 129, "ü"):
        r = http.get("/v1/models", headers={**auth(tenant), "x-request-id": insane.encode()})
        assert r.status_code == 200
        assert r.headers["x-request-id"].startswith("req_")

    with pytest.raises(openai.NotFoundError) as err:  # errors carry it too
        client.files.retrieve("file-missing", extra_headers={"x-request-id": "trace-404"})
    assert err.value.request_id == "trace-404"
    for path in ("/healthz", "/v1/nowhere", "/metrics"):
        assert http.get(path).headers["x-request-id"].startswith("req_")
    assert http.get("/v1/models").headers["x-request-id"]  # 401 too
    log = re.sub(r"\x1b\[[0-9;]*m", "", live_api.log())  # the console renderer's colours
    assert "request_id=trace-404" in log
    assert f"request_id={generated}" in log


# -- pause / resume (the state machine; the worker side is in tests/worker) ---------------------
def test_pause_and_resume_move_the_job_and_are_audited(client, sdk, other_tenant, tenant, db, broker, unchanged):
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:  # not running yet
        client.fine_tuning.jobs.pause(job.id)
    assert err.value.code == "job_not_pausable"
    assert "cancel it instead" in err.value.message
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.resume(job.id)
    assert err.value.code == "job_not_paused"

    set_job(db, job.id, status="running", stage="training", worker_id="w1", estimated_finish=2_000_000_000)
    with pytest.raises(openai.NotFoundError):
        sdk(other_tenant).fine_tuning.jobs.pause(job.id)
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    assert paused.estimated_finish is None
    assert paused.safety["stage"] == "training"
    with unchanged(tenant):
        assert client.fine_tuning.jobs.pause(job.id).status == "paused"  # idempotent, nothing recorded
    assert client.fine_tuning.jobs.list(limit=1).data[0].status == "paused"

    set_job(db, job.id, heartbeat_at=time.time())  # its worker is still checkpointing
    with unchanged(tenant), pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.resume(job.id)
    assert err.value.code == "job_pausing"
    set_job(db, job.id, heartbeat_at=time.time() - 301)  # silent past GUARDTUNE_STALE_JOB_AFTER_S: gone
    before = broker.llen("gpu")
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    assert resumed.safety["stage"] == "training"
    assert broker.llen("gpu") == before + 1  # the training stage is queued again
    [raw] = broker.lrange("gpu", 0, 0)
    assert b"guardtune.pipeline.train" in raw
    assert job.id.encode() in raw
    broker.lrem("gpu", 1, raw)  # no worker here
    with Session(db) as session:
        assert session.get(Job, job.id).worker_id is None
    assert [a for a in audit_actions(db, job.id) if a.startswith("job.")][-2:] == ["job.pause", "job.resume"]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=10)]
    assert messages[0].startswith("Fine-tuning job resumed")
    assert messages[1].startswith("Fine-tuning job paused")

    set_job(db, job.id, status="paused")
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # a paused job can be cancelled
    for call, code in (
        (client.fine_tuning.jobs.pause, "job_not_pausable"),
        (client.fine_tuning.jobs.resume, "job_not_paused"),
    ):
        with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
            call(job.id)
        assert err.value.code == code
        assert "already cancelled" in err.value.message


def test_metadata_filter_on_the_embedded_sqlite(embedded_env):
    """The same JSON filter on SQLite (the embedded default), keys with JSON-path characters too."""
    from core.db import session_scope
    from migrations import migrate
    from tests.worker.conftest import create_job

    migrate.upgrade()
    tags = {"a": {"team": "a", 'we"ird.key': "x"}, "b": {"team": "b"}, "none": None}
    with session_scope() as session:
        ids = {name: create_job(session, "org-sqlite", GOOD, metadata_=metadata) for name, metadata in tags.items()}
    with session_scope() as session:
        jobs = JobRepository(session, "org-sqlite")

        def listed(metadata):
            return {row.id for row in jobs.list(after=None, limit=10, metadata=metadata)[0]}

        assert listed({"team": "a"}) == {ids["a"]}
        assert listed({'we"ird.key': "x"}) == {ids["a"]}
        assert listed({"team": "a", 'we"ird.key': "y"}) == set()
        assert listed(None) == {ids["none"]}
        assert listed({}) == set(ids.values())
