"""A job's webhook deliveries as the delivery task sees them: which are due, recording an
attempt (the delivery log) and when the next one is due.

A delivery is ``pending`` until an attempt gets a 2xx answer (``delivered``) or it has been
tried ``GUARDTUNE_WEBHOOK_MAX_ATTEMPTS`` times (``failed``). After a failed attempt ``n`` the
next is due ``GUARDTUNE_WEBHOOK_BACKOFF_S * 2**(n-1)`` seconds later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from core.settings import Settings


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Due:
    """What one attempt needs, readable after the session that read it closed."""

    delivery_id: str
    endpoint_id: str
    url: str
    secret: str
    event_id: str
    payload: dict[str, Any]
    attempt: int  # 1-based: the number of this attempt


def due(session: Session, job_id: str, at: float) -> list[Due]:
    """The job's pending deliveries due at ``at``, oldest first."""
    rows = session.execute(
        select(WebhookDelivery, WebhookEndpoint.url, WebhookEndpoint.secret)
        .join(WebhookEndpoint, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
        .where(
            WebhookDelivery.job_id == job_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= at,
        )
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    ).tuples()
    return [Due(d.id, d.endpoint_id, url, secret, d.event_id, d.payload, d.attempts + 1) for d, url, secret in rows]


def backoff_s(attempt: int, settings: Settings) -> float:
    """The wait after the failed attempt ``attempt`` (1-based) before the next."""
    return float(settings.webhook_backoff_s * 2 ** (attempt - 1))


def record(
    session: Session, item: Due, *, status_code: int | None, error: str | None, settings: Settings
) -> DeliveryStatus | None:
    """Log the attempt ``item`` (its answer's ``status_code``, None when none came; ``error``
    None for a 2xx) and move its delivery on; returns the delivery's new status (None, nothing
    logged: its endpoint was deleted meanwhile)."""
    delivery = session.get(WebhookDelivery, item.delivery_id, with_for_update=True)
    if delivery is None:
        return None
    stamp = time.time()
    session.add(
        WebhookAttempt(
            delivery_id=item.delivery_id,
            endpoint_id=item.endpoint_id,
            attempt=item.attempt,
            status_code=status_code,
            error=error,
            created_at=stamp,
        )
    )
    delivery.attempts = item.attempt
    if error is None:
        delivery.status = DeliveryStatus.DELIVERED
    elif item.attempt >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.next_attempt_at = stamp + backoff_s(item.attempt, settings)
    session.flush()
    return DeliveryStatus(delivery.status)


def next_due(session: Session, job_id: str) -> float | None:
    """When the job's next pending delivery is due (None: none is pending)."""
    return session.scalar(
        select(func.min(WebhookDelivery.next_attempt_at)).where(
            WebhookDelivery.job_id == job_id, WebhookDelivery.status == DeliveryStatus.PENDING
        )
    )
