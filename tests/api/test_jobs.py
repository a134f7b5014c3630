"""Job creation rules, idempotency, per-org limits, cancel semantics, events, ETags."""

from __future__ import annotations

import math
import time

import openai
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.models import BaseModelEntry, File, Job, JobEvent, Organization, OutboxMessage, SafetyReport, StageRun
from tests.api.helpers import BASE_MODEL, GOOD, auth, queued_job_ids, set_job


@pytest.fixture
def fresh(sdk, new_tenant):
    """A tenant of its own with one uploaded training file: ``(tenant, client, file)``."""
    t = new_tenant()
    c = sdk(t)
    return t, c, c.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")


def set_org(db, org_id: str, **values) -> None:
    with Session(db) as session, session.begin():
        session.execute(update(Organization).where(Organization.id == org_id).values(**values))


# -- creation rules ------------------------------------------------------------------------
def test_unknown_model_is_refused(client, tenant, training_file, unchanged):
    with unchanged(tenant), pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file.id)
    assert err.value.code == "model_not_found"
    assert err.value.param == "model"


def test_a_failed_base_model_is_not_offered(client, tenant, training_file, unchanged, db):
    with Session(db) as session, session.begin():
        session.add(BaseModelEntry(id="api-test-broken-model", source="nowhere", status="failed"))
    try:
        with unchanged(tenant), pytest.raises(openai.NotFoundError) as err:
            client.fine_tuning.jobs.create(model="api-test-broken-model", training_file=training_file.id)
        assert err.value.code == "model_not_found"
        assert "api-test-broken-model" not in {m.id for m in client.models.list()}
    finally:
        with Session(db) as session, session.begin():
            session.delete(session.get(BaseModelEntry, "api-test-broken-model"))


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier"),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
            },
            "hyperparameters",
        ),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "dpo", "dpo": {}}}, "training_file"),  # a chat file: DPO trains on pairs
        ({"suffix": "x" * 65}, "suffix"),
        ({"suffix": "has:colon"}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"safety": {"mode": "yolo"}}, "safety.mode"),
        ({"safety": {"estimator": "vibes"}}, "safety.estimator"),
        ({"safety": {"kl_weight": {"min": 0.8, "max": 0.2}}}, "safety.kl_weight"),
        ({"safety": {"kl_weight": {"min": 0.0, "max": 0.9}}}, "safety.kl_weight.min"),  # below the operator's floor
        ({"safety": {"estimator": "judge"}}, "safety.estimator"),  # no judge configured here
        ({"safety": {"constant_kl_weight": 2}}, "safety.constant_kl_weight"),
        ({"unknown_param": 1}, "unknown_param"),
        ({"training_file": None}, "training_file"),
    ],
)
def test_invalid_parameters_are_refused(client, tenant, training_file, unchanged, changes, param):
    body = {"model": BASE_MODEL, "training_file": training_file.id, **changes}
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.post("/fine_tuning/jobs", body=body, cast_to=dict)
    assert err.value.param == param, err.value.message
    assert err.value.type == "invalid_request_error"


def test_method_form_and_defaults(fresh):
    _, client, f = fresh
    job = client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=f.id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 0.5}},
        },
    )
    assert job.hyperparameters.model_dump() == {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 0.5}
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert isinstance(job.seed, int)  # generated when not given
    assert 0 <= job.seed < 2**31
    assert job.model_extra["safety"] == {
        "mode": "adaptive",
        "estimator": "probe",
        "kl_weight": {"min": 0.1, "max": 0.9},
        "constant_kl_weight": 0.5,
        "risk_weighting": "example",
        "reference": "cached",
        "max_flagged_fraction": None,
        "stage": None,
        "scan_summary": None,
        "eval_summary": None,
        "gate": None,
    }
    constant = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "constant", "constant_kl_weight": 0.3}}
    )
    assert constant.model_extra["safety"]["mode"] == "constant"
    assert constant.model_extra["safety"]["constant_kl_weight"] == 0.3


# -- idempotency -------------------------------------------------------------------------
def test_idempotency_key_returns_the_same_job(fresh, sdk, other_tenant, db, broker, snapshot):
    t, client, f = fresh
    first = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, extra_headers={"Idempotency-Key": "create-1"}
    )
    before = snapshot(t)
    again = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, extra_headers={"Idempotency-Key": "create-1"}
    )
    assert again.id == first.id
    assert again.created_at == first.created_at
    assert snapshot(t) == before  # no second row, event, audit record or queued task
    assert queued_job_ids(broker).count(first.id) == 1

    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=f.id, suffix="other", extra_headers={"Idempotency-Key": "create-1"}
        )
    assert err.value.code == "idempotency_key_reused"
    assert snapshot(t) == before

    other = sdk(other_tenant)
    theirs = other.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    their_job = other.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=theirs.id, extra_headers={"Idempotency-Key": "create-1"}
    )
    assert their_job.id != first.id  # keys are per organization


def test_the_create_request_id_is_queued_with_the_job(fresh, db):
    """The worker binds it while running the job's stages (tests/worker/test_reaper.py)."""
    _, client, f = fresh
    created = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, extra_headers={"x-request-id": "trace-create-7"}
    )
    with Session(db) as session:
        rows = session.scalars(select(OutboxMessage.request_id).where(OutboxMessage.job_id == created.id)).all()
    assert rows == ["trace-create-7"]


# -- per-organization limits ------------------------------------------------------------
def test_concurrent_jobs_limit_answers_429(fresh, db, unchanged):
    t, client, f = fresh
    set_org(db, t.org_id, max_concurrent_jobs=1)
    first = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    with unchanged(t), pytest.raises(openai.RateLimitError) as err:
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    assert err.value.status_code == 429
    assert err.value.code == "concurrent_jobs_limit"
    assert "1 active" in err.value.message
    assert "limit 1" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"
    client.fine_tuning.jobs.cancel(first.id)
    assert client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id).status == "validating_files"


def test_storage_quota_answers_409(fresh, db, unchanged):
    t, client, f = fresh  # stores len(GOOD) bytes already
    set_org(db, t.org_id, max_storage_bytes=2 * len(GOOD) + 10)
    second = client.files.create(file=("b.jsonl", GOOD), purpose="fine-tune")
    with unchanged(t), pytest.raises(openai.ConflictError) as err:
        client.files.create(file=("c.jsonl", GOOD), purpose="fine-tune")
    assert err.value.code == "storage_quota_exceeded"
    assert "Storage quota exceeded" in err.value.message
    assert "Delete files" in err.value.message
    client.files.delete(second.id)
    assert client.files.create(file=("c.jsonl", GOOD), purpose="fine-tune").status == "processed"


def test_job_artifacts_count_in_the_storage_quota(fresh, db, store, unchanged):
    """Checkpoints, adapters and the other objects an organization's jobs store use its quota."""
    import io

    from core.storage import org_key

    t, client, f = fresh  # stores len(GOOD) bytes already
    set_org(db, t.org_id, max_storage_bytes=3 * len(GOOD))
    checkpoint = org_key(t.org_id, "jobs", "ftjob-quota", "checkpoints", "step-000020", "optimizer.pt")
    store.put_stream(checkpoint, io.BytesIO(b"\0" * (len(GOOD) + 1)))
    try:
        with unchanged(t), pytest.raises(openai.ConflictError) as err:
            client.files.create(file=("b.jsonl", GOOD), purpose="fine-tune")
    finally:
        store.delete(checkpoint)
    assert err.value.code == "storage_quota_exceeded"
    assert "(files and job artifacts, and uploads in progress)" in err.value.message
    assert client.files.create(file=("b.jsonl", GOOD), purpose="fine-tune").status == "processed"


# -- cancel ------------------------------------------------------------------------------
def test_cancel_semantics(client, tenant, training_file, db, unchanged):
    queued = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    set_job(db, queued.id, status="queued")
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"

    running = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    set_job(db, running.id, status="running", stage="training", estimated_finish=2_000_000_000)
    answer = client.fine_tuning.jobs.cancel(running.id)
    assert answer.status == "cancelled"
    assert answer.estimated_finish is None
    with Session(db) as session:
        row = session.get(Job, running.id)
        assert row.status == "cancelled"
        assert row.cancel_requested is True
        assert row.stage == "training"

    for final in ("succeeded", "failed"):
        job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
        set_job(db, job.id, status=final, finished_at=1_800_000_000)
        with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.cancel(job.id)
        assert err.value.code == "job_not_cancellable"
        assert final in err.value.message
        assert client.fine_tuning.jobs.retrieve(job.id).status == final


# -- listing -------------------------------------------------------------------------------
def test_jobs_list_pagination(fresh):
    _, client, f = fresh
    ids = []
    for _ in range(3):
        job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
        ids.append(job.id)
        client.fine_tuning.jobs.cancel(job.id)
    page = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == ids[::-1][:2]
    assert page.has_more is True
    rest = client.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert [j.id for j in rest.data] == [ids[0]]
    assert rest.has_more is False
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == ids[::-1]  # the SDK follows the cursor


def add_events(db, job_id: str, n: int, start: int = 0) -> list[str]:
    ids = [f"ftevent-{job_id[-8:]}-{start + i}" for i in range(n)]
    with Session(db) as session, session.begin():
        for i, event_id in enumerate(ids):
            step = start + i + 1
            session.add(
                JobEvent(
                    id=event_id,
                    job_id=job_id,
                    type="metrics",
                    message=f"Step {step}",
                    data={"step": step, "train_loss": 2.0 / step, "kl": 0.01, "kl_weight": 0.1, "risk": 1.0},
                )
            )
    return ids


def test_events_pagination_newest_first_and_incremental_asc(client, training_file, db, http, tenant):
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    created = [e.id for e in client.fine_tuning.jobs.list_events(job.id).data][::-1]  # oldest first
    steps = add_events(db, job.id, 5)
    everything = created + steps

    page = client.fine_tuning.jobs.list_events(job.id, limit=3)
    assert [e.id for e in page.data] == everything[::-1][:3]
    assert page.has_more is True
    rest = client.fine_tuning.jobs.list_events(job.id, limit=10, after=page.data[-1].id)
    assert [e.id for e in rest.data] == everything[::-1][3:]
    assert rest.has_more is False

    # the dashboard's incremental read: oldest first, after the last one seen
    r = http.get(f"/v1/fine_tuning/jobs/{job.id}/events", headers=auth(tenant), params={"order": "asc", "limit": 4})
    assert [e["id"] for e in r.json()["data"]] == everything[:4]
    assert r.json()["has_more"] is True
    last = r.json()["data"][-1]["id"]
    more = add_events(db, job.id, 2, start=5)
    r = http.get(f"/v1/fine_tuning/jobs/{job.id}/events", headers=auth(tenant), params={"order": "asc", "after": last})
    assert [e["id"] for e in r.json()["data"]] == everything[4:] + more
    assert r.json()["has_more"] is False

    r = http.get(f"/v1/fine_tuning/jobs/{job.id}/events", headers=auth(tenant), params={"after": "ftevent-nope"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_cursor"
    r = http.get(f"/v1/fine_tuning/jobs/{job.id}/events", headers=auth(tenant), params={"limit": 0})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "limit"


# -- ETag / 304 ---------------------------------------------------------------------------
def test_job_etag_and_304(client, training_file, http, tenant):
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    url = f"/v1/fine_tuning/jobs/{job.id}"
    first = http.get(url, headers=auth(tenant))
    etag = first.headers["etag"]
    assert first.status_code == 200
    assert etag.startswith('"')
    assert first.headers["cache-control"] == "private, no-cache"
    assert "Authorization" in first.headers["vary"]

    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = http.get(url, headers={**auth(tenant), "If-None-Match": tag})
        assert r.status_code == 304
        assert r.content == b""
        assert r.headers["etag"] == etag
    assert http.get(url, headers={**auth(tenant), "If-None-Match": '"stale"'}).status_code == 200

    listing = http.get("/v1/fine_tuning/jobs", headers=auth(tenant))
    list_etag = listing.headers["etag"]
    assert http.get("/v1/fine_tuning/jobs", headers={**auth(tenant), "If-None-Match": list_etag}).status_code == 304

    client.fine_tuning.jobs.cancel(job.id)
    changed = http.get(url, headers={**auth(tenant), "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "cancelled"
    assert changed.headers["etag"] != etag
    relisted = http.get("/v1/fine_tuning/jobs", headers={**auth(tenant), "If-None-Match": list_etag})
    assert relisted.status_code == 200
    assert relisted.headers["etag"] != list_etag


def test_job_etag_follows_every_write_of_the_job_or_its_report(client, training_file, http, tenant, db):
    """The tag comes from row versions (no body is built for a 304): each way a worker
    writes (a Core UPDATE, a report inserted, a report updated) must change it."""
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    url = f"/v1/fine_tuning/jobs/{job.id}"
    seen = [http.get(url, headers=auth(tenant)).headers["etag"]]

    def poll_changed() -> dict:
        r = http.get(url, headers={**auth(tenant), "If-None-Match": seen[-1]})
        assert r.status_code == 200
        assert r.headers["etag"] not in seen
        seen.append(r.headers["etag"])
        assert http.get(url, headers={**auth(tenant), "If-None-Match": seen[-1]}).status_code == 304
        return r.json()

    set_job(db, job.id, status="running", stage="scanning")
    assert poll_changed()["safety"]["stage"] == "scanning"
    with Session(db) as session, session.begin():
        session.add(SafetyReport(job_id=job.id, scan={"n": 1}))
    assert poll_changed()["safety"]["scan_summary"] == {"n": 1}
    with Session(db) as session, session.begin():
        session.get(SafetyReport, job.id).scan = {"n": 2}
    assert poll_changed()["safety"]["scan_summary"] == {"n": 2}


def test_events_etag_and_304(client, training_file, http, tenant, other_tenant, db):
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    url = f"/v1/fine_tuning/jobs/{job.id}/events"
    first = http.get(url, headers=auth(tenant), params={"order": "asc"})
    etag = first.headers["etag"]
    r = http.get(url, headers={**auth(tenant), "If-None-Match": etag}, params={"order": "asc"})
    assert r.status_code == 304
    assert r.content == b""
    # another page of the same events is another body, hence another tag
    assert http.get(url, headers={**auth(tenant), "If-None-Match": etag}).status_code == 200

    add_events(db, job.id, 1)
    r = http.get(url, headers={**auth(tenant), "If-None-Match": etag}, params={"order": "asc"})
    assert r.status_code == 200
    assert r.json()["data"][-1]["type"] == "metrics"
    assert r.headers["etag"] != etag

    # a conditional request never bypasses the organization check
    for path in (url, f"/v1/fine_tuning/jobs/{job.id}"):
        r = http.get(path, headers={**auth(other_tenant), "If-None-Match": "*"})
        assert r.status_code == 404


# -- the safety extension on the job and the report ----------------------------------------
def test_safety_report_and_job_safety_fields(client, training_file, db, sdk, other_tenant):
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    empty = client.get(f"/fine_tuning/jobs/{job.id}/safety_report", cast_to=dict)
    assert empty["object"] == "fine_tuning.job.safety_report"
    assert empty["job_id"] == job.id
    assert empty["scan"] is None
    assert empty["gate"] is None
    assert empty["config"]["mode"] == "adaptive"

    scan = {"n_examples": 3, "flagged": 1, "histogram": {"1": 2, "5": 1}, "flagged_lines": [2]}
    evaluation = {"asr_base": 0.02, "asr_finetuned": 0.03, "utility": {"val_loss": 1.1}}
    gate = {"decision": "block", "reasons": ["ASR rose by 0.31 (limit 0.05)"]}
    with Session(db) as session, session.begin():
        session.add(SafetyReport(job_id=job.id, scan=scan, evaluation=evaluation, gate=gate, training={"steps": 9}))
    set_job(
        db,
        job.id,
        status="failed",
        stage="gating",
        finished_at=1_800_000_000,
        error={"code": "safety_gate_blocked", "message": "The fine-tuned model failed the safety gate.", "param": None},
    )
    report = client.get(f"/fine_tuning/jobs/{job.id}/safety_report", cast_to=dict)
    assert report["scan"] == scan
    assert report["evaluation"] == evaluation
    assert report["gate"] == gate
    assert report["training"] == {"steps": 9}
    assert report["status"] == "failed"

    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error.code == "safety_gate_blocked"
    assert failed.error.param is None
    safety = failed.model_extra["safety"]
    assert safety["scan_summary"] == scan
    assert safety["eval_summary"] == evaluation
    assert safety["gate"] == gate
    assert safety["stage"] == "gating"

    with pytest.raises(openai.NotFoundError):
        sdk(other_tenant).get(f"/fine_tuning/jobs/{job.id}/safety_report", cast_to=dict)


def test_a_plain_poll_sees_every_write_too(client, training_file, http, tenant, db):
    """Without If-None-Match the body may come from the bodies kept by ETag
    (``api.conditional.conditional_rows``): it must still follow each write."""
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    url = f"/v1/fine_tuning/jobs/{job.id}"
    first, again = http.get(url, headers=auth(tenant)), http.get(url, headers=auth(tenant))
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    set_job(db, job.id, status="running", stage="scanning")
    changed = http.get(url, headers=auth(tenant))
    assert changed.headers["etag"] != first.headers["etag"]
    assert changed.json()["safety"]["stage"] == "scanning"


# -- the estimate (?dry_run=true) ------------------------------------------------------------
PIPELINE_STAGES = ["validate", "scan", "train", "evaluate", "gate", "release"]
DRY_RUN = {"dry_run": "true"}


def outbox_rows(db, org_id: str) -> int:
    with Session(db) as session:
        jobs = select(Job.id).where(Job.org_id == org_id)
        return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.job_id.in_(jobs)))


def test_a_dry_run_answers_the_estimate_and_creates_nothing(fresh, unchanged, db):
    tenant, client, training_file = fresh  # a job of its own to hang the measured runs on
    measured = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    with Session(db) as session, session.begin():  # every stage measured at least once
        for stage in PIPELINE_STAGES:
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
    assert list(body["stages"]) == PIPELINE_STAGES
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
