"""Webhook endpoints and their delivery log (admin-scoped keys only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from core.webhooks.endpoints import MAX_URL_LENGTH


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=MAX_URL_LENGTH, description="Where events are POSTed: an http:// or https:// URL"
    )


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    organization_id: str
    url: str
    created_at: int

    @classmethod
    def of(cls, row: WebhookEndpoint) -> WebhookEndpointObject:
        return cls(id=row.id, organization_id=row.org_id, url=row.url, created_at=row.created_at)


class WebhookEndpointCreated(WebhookEndpointObject):
    secret: str = Field(
        description="The signing secret (whsec_…), for client.webhooks.unwrap(). Shown only in this response."
    )


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


class WebhookAttemptObject(BaseModel):
    """One POST of one event to the endpoint."""

    object: Literal["webhook_endpoint.delivery_attempt"] = "webhook_endpoint.delivery_attempt"
    event_id: str
    event_type: str
    fine_tuning_job_id: str
    attempt: int = Field(description="1 for the first POST of the event, then 2, 3, …")
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came (timeout, refused)")
    error: str | None = Field(description="Why the attempt did not deliver; null for a 2xx")
    created_at: float = Field(description="When the attempt was made (Unix seconds)")
    delivery_status: Literal["pending", "delivered", "failed"] = Field(
        description="The event's delivery to this endpoint now: failed once the attempts ran out"
    )

    @classmethod
    def of(cls, attempt: WebhookAttempt, delivery: WebhookDelivery) -> WebhookAttemptObject:
        return cls(
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            fine_tuning_job_id=delivery.job_id,
            attempt=attempt.attempt,
            status_code=attempt.status_code,
            error=attempt.error,
            created_at=attempt.created_at,
            delivery_status=delivery.status,  # type: ignore[arg-type]
        )


class WebhookAttemptList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookAttemptObject]
    has_more: bool = Field(description="Older attempts exist beyond `limit`")
