"""``/v1/models``: base models plus released fine-tuned models, and the adapter download."""

from __future__ import annotations

import io
import json
import os
import tarfile

import openai
import pytest
from sqlalchemy.orm import Session

from core.models import Job
from core.releases import digests
from core.releases import service as releases
from tests.api.helpers import BASE_MODEL, GOOD, audit_actions, auth, set_job

ADAPTER_CONFIG = json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": BASE_MODEL}).encode()
ADAPTER_WEIGHTS = os.urandom(3 * 1024 * 1024 + 123)  # several chunks, not a multiple of 512


def finished_job(client, db, store, *, suffix: str, release: bool):
    """A job run to the end by a stand-in pipeline: adapter stored and, if ``release``, released."""
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, suffix=suffix)
    with Session(db) as session, session.begin():
        row = session.get(Job, job.id)
        prefix = digests.adapter_prefix(row.org_id, row.id)
        store.put_stream(f"{prefix}/adapter_config.json", io.BytesIO(ADAPTER_CONFIG))
        store.put_stream(f"{prefix}/adapter_model.safetensors", io.BytesIO(ADAPTER_WEIGHTS))
        if release:
            released = releases.release_job(
                session, row, actor="system", sha256=digests.adapter_sha256(store, prefix), storage_prefix=prefix
            )
            row.status, row.finished_at = "succeeded", 1_800_000_000
            return job.id, released.id
    set_job(
        db,
        job.id,
        status="failed",
        finished_at=1_800_000_000,
        error={"code": "safety_gate_blocked", "message": "blocked by the safety gate", "param": None},
    )
    return job.id, None


@pytest.fixture(scope="module")
def released(client, db, store):
    return finished_job(client, db, store, suffix="helpdesk", release=True)


def test_released_model_is_listed_for_its_org_only(client, released, tenant, sdk, other_tenant):
    job_id, model_id = released
    assert model_id == f"ft:{BASE_MODEL}:{tenant.org_id}:helpdesk:{job_id}"
    assert client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model == model_id
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == BASE_MODEL
    assert model_id in ids
    model = client.models.retrieve(model_id)
    assert model.id == model_id
    assert model.owned_by == tenant.org_id
    assert model.object == "model"

    other = sdk(other_tenant)
    assert model_id not in {m.id for m in other.models.list().data}
    with pytest.raises(openai.NotFoundError) as err:
        other.models.retrieve(model_id)
    assert err.value.code == "model_not_found"


def test_adapter_download_streams_a_tar_of_the_peft_files(
    http, released, tenant, other_tenant, db, tmp_path, unchanged
):
    job_id, model_id = released
    with http.stream("GET", f"/v1/models/{model_id}/adapter", headers=auth(tenant)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/x-tar"
        body = b"".join(r.iter_bytes())
    assert int(r.headers["content-length"]) == len(body)
    root = digests.model_id(BASE_MODEL, tenant.org_id, "helpdesk", job_id).replace(":", "-")
    assert r.headers["content-disposition"] == f'attachment; filename="{root}.tar"'
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert sorted(tar.getnames()) == [f"{root}/adapter_config.json", f"{root}/adapter_model.safetensors"]
        assert tar.extractfile(f"{root}/adapter_config.json").read() == ADAPTER_CONFIG
        assert tar.extractfile(f"{root}/adapter_model.safetensors").read() == ADAPTER_WEIGHTS
        tar.extractall(tmp_path, filter="data")
    # the digest the release recorded checks against the downloaded files
    assert digests.dir_sha256(tmp_path / root) == r.headers["x-guardtune-adapter-sha256"]
    assert audit_actions(db, model_id) == ["model.release", "model.adapter_download"]

    with unchanged(other_tenant):
        r = http.get(f"/v1/models/{model_id}/adapter", headers=auth(other_tenant))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_blocked_base_and_unknown_models_have_no_adapter(client, http, tenant, db, store, unchanged):
    job_id, _ = finished_job(client, db, store, suffix="blocked", release=False)
    blocked = client.fine_tuning.jobs.retrieve(job_id)
    assert blocked.status == "failed"
    assert blocked.error.code == "safety_gate_blocked"
    assert blocked.fine_tuned_model is None
    would_be = digests.model_id(BASE_MODEL, tenant.org_id, "blocked", job_id)
    with unchanged(tenant):
        for model in (would_be, BASE_MODEL, "ft:nothing:here"):
            r = http.get(f"/v1/models/{model}/adapter", headers=auth(tenant))
            assert r.status_code == 404, model
    assert would_be not in {m.id for m in client.models.list().data}


def test_a_revoked_model_is_gone(client, http, tenant, db, store):
    _, model_id = finished_job(client, db, store, suffix="revoked", release=True)
    assert http.get(f"/v1/models/{model_id}/adapter", headers=auth(tenant)).status_code == 200
    with Session(db) as session, session.begin():
        releases.revoke_model(session, model_id, actor="ops:test", reason="found unsafe in review")
    assert http.get(f"/v1/models/{model_id}/adapter", headers=auth(tenant)).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model_id)
    assert model_id not in {m.id for m in client.models.list().data}
