"""An organization's webhook endpoints and their delivery log (the admin API and ops call this
one service).

Create returns the endpoint with its signing secret (``whsec_`` + 32 random bytes in base64,
Standard Webhooks' format), shown that once; the row keeps it as is, since the worker signs
with it. Delete removes the endpoint with its deliveries and their log (pending deliveries are
then never sent). Each change writes its audit record (never the secret) in the caller's
session; the caller commits.
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from core.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, now
from core.repository import OrgScopedRepository

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed IPv6 bracket, a port out of range or not a number
        return False


def check_url(url: str) -> str:
    """``url`` stripped, or 400 ``invalid_url`` unless it is an absolute http(s) URL with a host
    (and a valid port, if any)."""
    url = url.strip()
    if not _is_http_url(url):
        raise InvalidRequest(
            f"A webhook URL must be an absolute http:// or https:// URL with a host; got {url[:200]!r}.",
            code="invalid_url",
            param="url",
        )
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"A webhook URL is at most {MAX_URL_LENGTH} characters.", code="invalid_url", param="url")
    return url


class EndpointRepository(OrgScopedRepository[WebhookEndpoint]):
    """An organization's webhook endpoints."""

    model = WebhookEndpoint

    def all(self) -> list[WebhookEndpoint]:
        """Oldest first."""
        query = self.scoped(select(WebhookEndpoint)).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        return list(self.session.scalars(query))


class WebhookService:
    """The webhook endpoints of the organization ``org_id``."""

    def __init__(self, session: Session, org_id: str):
        self.session = session
        self.org_id = org_id
        self.endpoints = EndpointRepository(session, org_id)

    def all(self) -> list[WebhookEndpoint]:
        """The organization's endpoints, oldest first."""
        return self.endpoints.all()

    def get(self, endpoint_id: str) -> WebhookEndpoint:
        """The endpoint, or 404 ``webhook_endpoint_not_found`` (also for another organization's)."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(
                f"No such webhook endpoint in {self.org_id!r}: {endpoint_id!r}.",
                code="webhook_endpoint_not_found",
                param="endpoint_id",
            )
        return endpoint

    def create(self, url: str, *, actor: str) -> WebhookEndpoint:
        """A new endpoint (audited ``webhook.create``); its ``secret`` is the one to show once."""
        endpoint = self.endpoints.add(
            WebhookEndpoint(
                id=new_id("we"), org_id=self.org_id, url=check_url(url), secret=new_secret(), created_at=now()
            )
        )
        details = {"org_id": self.org_id, "url": endpoint.url}
        audit.record(self.session, actor=actor, action="webhook.create", target=endpoint.id, details=details)
        return endpoint

    def delete(self, endpoint_id: str, *, actor: str) -> WebhookEndpoint:
        """Remove the endpoint, its deliveries and their log (audited ``webhook.delete``)."""
        endpoint = self.get(endpoint_id)
        self.session.execute(delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint.id))
        self.session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
        self.session.delete(endpoint)
        self.session.flush()
        details = {"org_id": self.org_id, "url": endpoint.url}
        audit.record(self.session, actor=actor, action="webhook.delete", target=endpoint.id, details=details)
        return endpoint

    def attempts(
        self, endpoint_id: str, *, limit: int = 100
    ) -> tuple[list[tuple[WebhookAttempt, WebhookDelivery]], bool]:
        """The endpoint's delivery log, newest first: its last ``limit`` attempts, each with its
        delivery, and whether older ones exist."""
        endpoint = self.get(endpoint_id)
        query = (
            select(WebhookAttempt, WebhookDelivery)
            .join(WebhookDelivery, WebhookAttempt.delivery_id == WebhookDelivery.id)
            .where(WebhookAttempt.endpoint_id == endpoint.id)
            .order_by(WebhookAttempt.seq.desc())
            .limit(limit + 1)
        )
        rows = [(attempt, delivery) for attempt, delivery in self.session.execute(query).tuples()]
        return rows[:limit], len(rows) > limit
