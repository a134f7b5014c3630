"""``guardtune-ops webhooks``: endpoints created (the secret printed once), listed, deleted,
audited; a bad URL refused; an approved blocked job's event delivered and in the delivery log;
an organization's purge takes its endpoints along."""

from __future__ import annotations

import json

from sqlalchemy import select

from core.db import session_scope
from core.models import OutboxMessage, WebhookDelivery
from tests.ops.factories import make_job
from tests.worker.receiver import receiver


def _org(ops, name: str = "acme") -> str:
    return ops("orgs", "create", name, "--json").json()["id"]


def _drop_sent(backend, row_id: str) -> None:
    """Take the delivery task sent to the deployment's Redis back out (no worker runs here)."""
    if backend.name != "postgres":
        return
    import redis

    broker = redis.Redis.from_url(backend.env["GUARDTUNE_BROKER_URL"])
    for raw in broker.lrange("default", 0, -1):
        if json.loads(raw)["headers"]["id"] == row_id:
            broker.lrem("default", 0, raw)


def test_endpoint_lifecycle_and_delivery_log(backend, ops, adapter_dir):
    from worker.webhooks import deliver

    org = _org(ops)
    with receiver() as hook:
        created = ops("webhooks", "create", hook.url, "--org", "acme", "--json").json()
        assert created["secret"].startswith("whsec_")
        assert created["org_id"] == org
        listed = ops("webhooks", "list", "--org", "acme", "--json").json()
        assert listed == [{k: v for k, v in created.items() if k != "secret"}]
        job_id = make_job(org, adapter=adapter_dir)  # blocked by the gate
        ops("release", "approve", job_id, "--reason", "looked fine")
        with session_scope() as session:
            [delivery] = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).all()
            row = session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id)).one()
        assert delivery.event_type == "fine_tuning.job.succeeded"
        assert delivery.payload["data"]["safety"]["decision"] == "approved"
        _drop_sent(backend, row.id)
        assert deliver(job_id, row.id) == 1
    [received] = hook.received
    assert json.loads(received.body)["data"]["id"] == job_id
    log = ops("webhooks", "deliveries", created["id"], "--org", "acme", "--json").json()
    assert [(r["attempt"], r["status_code"], r["error"], r["delivery_status"], r["job_id"]) for r in log] == [
        (1, 200, None, "delivered", job_id)
    ]
    table = ops("webhooks", "deliveries", created["id"], "--org", "acme").stdout
    assert "fine_tuning.job.succeeded" in table
    ops("webhooks", "delete", created["id"], "--org", "acme")
    assert ops("webhooks", "list", "--org", "acme", "--json").json() == []
    story = ops("audit", "show", "--target", created["id"], "--json").json()
    assert [r["action"] for r in story] == ["webhook.create", "webhook.delete"]
    assert created["secret"] not in json.dumps(story)


def test_bad_url_and_unknown_endpoint_are_refused(backend, ops):
    _org(ops)
    refused = ops("webhooks", "create", "ftp://example.com/x", "--org", "acme", ok=False)
    assert refused.exit_code == 1
    assert "http:// or https://" in refused.stderr
    missing = ops("webhooks", "delete", "we-missing", "--org", "acme", ok=False)
    assert missing.exit_code == 1
    assert "we-missing" in missing.stderr


def test_purge_removes_the_organizations_endpoints(backend, ops):
    _org(ops)
    ops("webhooks", "create", "https://hooks.example.com/a", "--org", "acme")
    out = ops("orgs", "delete", "acme", "--purge", "--json").json()
    assert out["rows_deleted"]["webhook_endpoints"] == 1
