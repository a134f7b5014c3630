"""The webhook delivery task (``guardtune.webhooks.deliver``, default queue): POST a finished
job's due deliveries (:mod:`core.webhooks.deliveries`) to their endpoints, signed per Standard
Webhooks (``webhook-id``: the event id, ``webhook-timestamp``, ``webhook-signature``; what
the ``openai`` SDK's ``client.webhooks.unwrap()`` verifies), and log every attempt.

It runs from the job's outbox row (:mod:`core.outbox`: a duplicate delivery of the row runs
nothing). A 2xx answer delivers; anything else (another status, a timeout, a refused
connection) is retried with backoff until ``GUARDTUNE_WEBHOOK_MAX_ATTEMPTS``: while a delivery
is pending, the task leaves an outbox row with ``not_before`` at the next one due, which the
reaper sends then (so a retry survives a worker restart and holds no message in memory).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from core import outbox
from core.db import session_scope
from core.jobs.pipeline import DEFAULT_QUEUE, WEBHOOK_TASK
from core.logging import get_logger
from core.settings import get_settings
from core.webhooks import deliveries
from core.webhooks.deliveries import Due

log = get_logger(__name__)
USER_AGENT = "guardtune-webhooks/1"


def signed_request(item: Due) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt (signed at send time: a retry gets a fresh timestamp)."""
    body = json.dumps(item.payload, separators=(",", ":")).encode()
    stamp = datetime.now(tz=UTC)
    signature = Webhook(item.secret).sign(item.event_id, stamp, body)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": item.event_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }
    return body, headers


def attempt(client: httpx.Client, item: Due) -> tuple[int | None, str | None]:
    """POST ``item``: ``(status code or None, error or None)``; no error means delivered."""
    body, headers = signed_request(item)
    try:
        response = client.post(item.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"
    if response.is_success:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def deliver(job_id: str, message_id: str | None = None) -> int:
    """Attempt the job's due deliveries; returns how many were attempted. ``message_id``: the
    outbox row this run stems from (None only when called in this process)."""
    settings = get_settings()
    with session_scope() as session:
        if message_id is not None and outbox.consume(session, message_id) != outbox.Delivery.FIRST:
            log.info("webhooks_skipped", job_id=job_id, message_id=message_id, reason="not a first delivery")
            return 0
        items = deliveries.due(session, job_id, time.time())
    with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False) as client:
        for item in items:
            status_code, error = attempt(client, item)
            with session_scope() as session:
                status = deliveries.record(session, item, status_code=status_code, error=error, settings=settings)
            log.info(
                "webhook_attempt",
                job_id=job_id,
                endpoint_id=item.endpoint_id,
                event_id=item.event_id,
                attempt=item.attempt,
                status_code=status_code,
                error=error,
                delivery=status,
            )
    with session_scope() as session:
        when = deliveries.next_due(session, job_id)
        if when is not None:
            outbox.add(session, job_id, WEBHOOK_TASK, DEFAULT_QUEUE, not_before=when)
    return len(items)
