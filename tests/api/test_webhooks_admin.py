"""``/v1/admin/organizations/{org}/webhooks``: endpoints created (the secret shown once),
listed, deleted, audited; non-http(s) URLs refused; a job's terminal move queues its event
for the organization's endpoints and sends the delivery task after the commit."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from core.jobs.pipeline import WEBHOOK_TASK
from core.models import OutboxMessage, WebhookDelivery
from tests.api.helpers import BASE_MODEL, GOOD, audit_actions, auth


@pytest.fixture(scope="module")
def admin(new_tenant):
    return new_tenant("admin")


def hooks(tenant) -> str:
    return f"/v1/admin/organizations/{tenant.org_id}/webhooks"


def test_endpoint_lifecycle(http, admin, tenant, db):
    r = http.post(hooks(tenant), headers=auth(admin), json={"url": " https://hooks.example.com/guardtune "})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["object"] == "webhook_endpoint"
    assert created["organization_id"] == tenant.org_id
    assert created["url"] == "https://hooks.example.com/guardtune"
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    Webhook(created["secret"])  # a secret Standard Webhooks' library accepts
    assert audit_actions(db, created["id"]) == ["webhook.create"]

    listed = http.get(hooks(tenant), headers=auth(admin)).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]  # shown once
    assert http.get(f"{hooks(tenant)}/{created['id']}/deliveries", headers=auth(admin)).json() == {
        "object": "list",
        "data": [],
        "has_more": False,
    }

    r = http.delete(f"{hooks(tenant)}/{created['id']}", headers=auth(admin))
    assert r.json() == {"id": created["id"], "object": "webhook_endpoint.deleted", "deleted": True}
    assert http.get(hooks(tenant), headers=auth(admin)).json()["data"] == []
    assert http.delete(f"{hooks(tenant)}/{created['id']}", headers=auth(admin)).status_code == 404
    assert audit_actions(db, created["id"]) == ["webhook.create", "webhook.delete"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "example.com/hook",
        "file:///etc/passwd",
        "https://",
        "http://[::1/x",
        "http://h:99999/",
    ],
)
def test_non_http_urls_are_refused(http, admin, tenant, url):
    r = http.post(hooks(tenant), headers=auth(admin), json={"url": url})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_url"
    assert error["param"] == "url"
    assert "http:// or https://" in error["message"]


def test_endpoints_are_per_organization_and_admin_only(http, admin, tenant, other_tenant):
    created = http.post(hooks(tenant), headers=auth(admin), json={"url": "http://127.0.0.1:9/x"}).json()
    try:
        other = f"{hooks(other_tenant)}/{created['id']}"
        assert http.delete(other, headers=auth(admin)).json()["error"]["code"] == "webhook_endpoint_not_found"
        assert http.get(f"{other}/deliveries", headers=auth(admin)).status_code == 404
        assert http.get(hooks(other_tenant), headers=auth(admin)).json()["data"] == []
        assert http.get("/v1/admin/organizations/org-missing/webhooks", headers=auth(admin)).status_code == 404
        assert http.get(hooks(tenant), headers=auth(tenant)).status_code == 403
        r = http.post(hooks(tenant), headers=auth(tenant), json={"url": "https://example.com"})
        assert r.status_code == 403
    finally:
        http.delete(f"{hooks(tenant)}/{created['id']}", headers=auth(admin))


def test_a_cancelled_job_queues_its_event_after_the_commit(http, sdk, admin, new_tenant, db, broker):
    tenant = new_tenant()
    endpoint = http.post(hooks(tenant), headers=auth(admin), json={"url": "http://127.0.0.1:9/hook"}).json()
    client = sdk(tenant)
    training = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training.id)
    with Session(db) as session:
        assert session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).all() == []
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with Session(db) as session:
        [delivery] = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).all()
        row = session.scalars(
            select(OutboxMessage).where(OutboxMessage.job_id == job.id).order_by(OutboxMessage.seq.desc())
        ).first()
    assert delivery.endpoint_id == endpoint["id"]
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    event = delivery.payload
    assert event["id"].startswith("evt_")
    assert (event["object"], event["type"]) == ("event", "fine_tuning.job.cancelled")
    assert event["data"]["id"] == job.id
    assert event["data"]["safety"] == {"decision": None, "reasons": [], "asr": None, "error_code": None}
    assert (row.task, row.queue, row.consumed_at) == (WEBHOOK_TASK, "default", None)
    assert row.sent_at is not None  # sent after the cancel's commit
    sent = [raw for raw in broker.lrange("default", 0, -1) if json.loads(raw)["headers"]["id"] == row.id]
    assert len(sent) == 1
    assert json.loads(sent[0])["headers"]["task"] == WEBHOOK_TASK
    broker.lrem("default", 0, sent[0])
