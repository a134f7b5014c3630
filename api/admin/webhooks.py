"""``/v1/admin/organizations/{org_id}/webhooks``: an organization's webhook endpoints and
their delivery log (admin-scoped keys only; changes audited). The handlers call
:class:`~core.webhooks.endpoints.WebhookService` (shared with ops); each change commits in its
request's transaction."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.admin.deps import OrgServiceDep
from api.admin.webhook_schemas import (
    WebhookAttemptList,
    WebhookAttemptObject,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointObject,
)
from api.auth import ADMIN
from api.deps import AdminDep, SessionDep
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS, ErrorResponse, ListObject
from core.webhooks.endpoints import WebhookService

router = APIRouter(
    route_class=GuardedRoute,
    prefix="/admin/organizations/{org_id}/webhooks",
    tags=["admin"],
    dependencies=ADMIN,
    responses={**COMMON_ERRORS, 403: {"model": ErrorResponse, "description": "The key is not admin-scoped"}},
)


def _service(org_id: str, orgs: OrgServiceDep, session: SessionDep) -> WebhookService:
    return WebhookService(session, orgs.get(org_id).id)


@router.post(
    "",
    response_model=WebhookEndpointCreated,
    summary="Create a webhook endpoint (the signing secret is shown once)",
)
def create_endpoint(
    org_id: str, body: WebhookEndpointCreate, caller: AdminDep, orgs: OrgServiceDep, session: SessionDep
) -> WebhookEndpointCreated:
    endpoint = _service(org_id, orgs, session).create(body.url, actor=caller.actor)
    session.commit()
    return WebhookEndpointCreated(**WebhookEndpointObject.of(endpoint).model_dump(), secret=endpoint.secret)


@router.get("", response_model=ListObject[WebhookEndpointObject], summary="List an organization's webhook endpoints")
def list_endpoints(org_id: str, orgs: OrgServiceDep, session: SessionDep) -> dict:
    return {"object": "list", "data": [WebhookEndpointObject.of(e) for e in _service(org_id, orgs, session).all()]}


@router.delete(
    "/{endpoint_id}",
    response_model=WebhookEndpointDeleted,
    summary="Delete a webhook endpoint with its delivery log",
)
def delete_endpoint(
    org_id: str, endpoint_id: str, caller: AdminDep, orgs: OrgServiceDep, session: SessionDep
) -> WebhookEndpointDeleted:
    endpoint = _service(org_id, orgs, session).delete(endpoint_id, actor=caller.actor)
    session.commit()
    return WebhookEndpointDeleted(id=endpoint.id, deleted=True)


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=WebhookAttemptList,
    summary="An endpoint's delivery log: its latest attempts, newest first",
)
def list_attempts(
    org_id: str,
    endpoint_id: str,
    orgs: OrgServiceDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> WebhookAttemptList:
    rows, has_more = _service(org_id, orgs, session).attempts(endpoint_id, limit=limit)
    return WebhookAttemptList(data=[WebhookAttemptObject.of(a, d) for a, d in rows], has_more=has_more)
