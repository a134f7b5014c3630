"""Ops and customers together, on the production shape (uvicorn API, Postgres, S3,
Redis): API calls and ops commands leave one audit record each, in order; the chain
verifies; a model released by override is served until ops revoke it, after which it
is gone from ``/v1/models`` and its adapter download answers 404."""

from __future__ import annotations

import io
import json
import secrets
import tarfile

import httpx
import openai
import pytest
import redis
from sqlalchemy import func, select

from core.db import session_scope
from core.models import AuditRecord, ReleasedModel
from tests.api.helpers import BASE_MODEL, GOOD, pipeline_messages
from tests.ops.conftest import ACTOR
from tests.ops.factories import make_job

OPS = f"ops:{ACTOR}"


@pytest.fixture
def ops_env(configured, monkeypatch):
    monkeypatch.setenv("GUARDTUNE_OPS_ACTOR", ACTOR)
    return configured


def _forget_queued(broker_url: str, job_id: str) -> None:
    """Leave no pipeline task of this test for a later worker."""
    client = redis.Redis.from_url(broker_url)
    try:
        for raw, queued in pipeline_messages(client):
            if queued == job_id:
                client.lrem("default", 0, raw)
    finally:
        client.close()


def test_api_and_ops_actions_are_audited_in_order(live_api, ops_env, ops, adapter_dir):
    with session_scope() as session:
        start = session.scalar(select(func.max(AuditRecord.seq))) or 0
    base = live_api.base_url
    org = ops("orgs", "create", f"ops-api-{secrets.token_hex(4)}", "--json").json()["id"]
    admin = ops("keys", "create", "--org", org, "--admin", "--json").json()
    http = httpx.Client(base_url=base, timeout=30)
    as_admin = {"Authorization": f"Bearer {admin['key']}"}

    created = http.post(f"/v1/admin/organizations/{org}/api_keys", json={"name": "app"}, headers=as_admin)
    assert created.status_code == 200, created.text
    customer = created.json()
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=customer["key"], max_retries=0, timeout=30)

    upload = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=upload.id, suffix="ops")
    _forget_queued(ops_env["GUARDTUNE_BROKER_URL"], job.id)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"

    blocked = make_job(org, adapter=adapter_dir, suffix="override")
    model = ops(
        "release", "approve", blocked, "--reason", "red-team confirmed the eval set was contaminated", "--json"
    ).json()
    assert model["id"] in [m.id for m in client.models.list().data]
    assert client.models.retrieve(model["id"]).owned_by == org

    download = http.get(f"/v1/models/{model['id']}/adapter", headers={"Authorization": f"Bearer {customer['key']}"})
    assert download.status_code == 200, download.text
    assert download.headers["x-guardtune-adapter-sha256"] == model["sha256"]
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        names = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar.getmembers()}
    assert names == {p.name: p.read_bytes() for p in adapter_dir.iterdir()}

    ops("release", "revoke", model["id"], "--reason", "customer data leaked through generations")
    assert model["id"] not in [m.id for m in client.models.list().data]
    assert BASE_MODEL in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model["id"])
    gone = http.get(f"/v1/models/{model['id']}/adapter", headers={"Authorization": f"Bearer {customer['key']}"})
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found"
    with session_scope() as session:
        row = session.get(ReleasedModel, model["id"])
        assert row.revoked_at is not None
        assert row.revoke_reason == "customer data leaked through generations"

    client.files.delete(upload.id)
    revoked = http.post(f"/v1/admin/organizations/{org}/api_keys/{customer['id']}/revoke", headers=as_admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"]
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    http.close()

    mine = {OPS, f"key:{admin['id']}", f"key:{customer['id']}"}
    ids = {org, admin["id"], customer["id"], upload.id, job.id, blocked, model["id"]}
    rows = [json.loads(line) for line in ops("audit", "export", "--since", "0").stdout.splitlines()]
    trail = [
        (r["actor"], r["action"], r["target"])
        for r in rows
        if r["seq"] > start and (r["actor"] in mine or r["target"] in ids)
    ]
    cust, adm = f"key:{customer['id']}", f"key:{admin['id']}"
    assert trail == [
        (OPS, "org.create", org),
        (OPS, "key.create", admin["id"]),
        (adm, "key.create", customer["id"]),
        (cust, "file.upload", upload.id),
        (cust, "job.create", job.id),
        (cust, "job.cancel", job.id),
        ("system", "gate.decision", blocked),
        (OPS, "release.approve", blocked),
        (OPS, "model.release", model["id"]),
        (cust, "model.adapter_download", model["id"]),
        (OPS, "model.revoke", model["id"]),
        (cust, "file.delete", upload.id),
        (adm, "key.revoke", customer["id"]),
    ]
    approve = next(r for r in rows if r["action"] == "release.approve" and r["target"] == blocked)
    assert approve["details"]["reason"] == "red-team confirmed the eval set was contaminated"
    assert "intact" in ops("audit", "verify").stdout
