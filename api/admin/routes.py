"""``/v1/admin``: organizations and API keys (admin-scoped keys only; every change audited).

The handlers call the organizations domain (:class:`~core.orgs.service.OrgService`, shared
with ops) and keep what is HTTP's own: each change commits in its request's transaction,
and a revoke forgets this process's cached keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.admin.deps import OrgServiceDep
from api.admin.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyObject,
    OrganizationCreate,
    OrganizationObject,
    OrganizationUpdate,
)
from api.auth import ADMIN
from api.deps import AdminDep, SessionDep
from api.keycache import forget_all
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS, CursorPage, ErrorResponse, ListObject, page

router = APIRouter(
    route_class=GuardedRoute,
    prefix="/admin",
    tags=["admin"],
    dependencies=ADMIN,
    responses={**COMMON_ERRORS, 403: {"model": ErrorResponse, "description": "The key is not admin-scoped"}},
)


@router.post(
    "/organizations",
    response_model=OrganizationObject,
    summary="Create an organization",
    responses={409: {"model": ErrorResponse, "description": "The name is taken"}},
)
def create_org(
    body: OrganizationCreate, caller: AdminDep, service: OrgServiceDep, session: SessionDep
) -> OrganizationObject:
    limits = body.model_dump(include={"max_concurrent_jobs", "max_storage_bytes", "allowed_modes"}, exclude_none=True)
    org = service.create(body.name, actor=caller.actor, limits=limits)
    session.commit()
    return OrganizationObject.of(org)


@router.get("/organizations", response_model=CursorPage[OrganizationObject], summary="List organizations")
def list_orgs(
    service: OrgServiceDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    rows, has_more = service.page(after=after, limit=limit)
    return page([OrganizationObject.of(r) for r in rows], has_more)


@router.get("/organizations/{org_id}", response_model=OrganizationObject, summary="Retrieve an organization")
def retrieve_org(org_id: str, service: OrgServiceDep) -> OrganizationObject:
    return OrganizationObject.of(service.get(org_id))


@router.patch("/organizations/{org_id}", response_model=OrganizationObject, summary="Change an organization's limits")
def update_org(
    org_id: str, body: OrganizationUpdate, caller: AdminDep, service: OrgServiceDep, session: SessionDep
) -> OrganizationObject:
    org = service.get(org_id, for_update=True)
    changes = body.model_dump(mode="json", exclude_unset=True)
    if changes:
        service.update(org, changes, actor=caller.actor)
    session.commit()
    return OrganizationObject.of(org)


@router.get(
    "/organizations/{org_id}/api_keys", response_model=ListObject[ApiKeyObject], summary="List an organization's keys"
)
def list_keys(org_id: str, service: OrgServiceDep) -> dict:
    return {"object": "list", "data": [ApiKeyObject.of(k) for k in service.keys(service.get(org_id))]}


@router.post(
    "/organizations/{org_id}/api_keys",
    response_model=ApiKeyCreated,
    summary="Create an API key (the secret is shown once)",
)
def create_key(
    org_id: str, body: ApiKeyCreate, caller: AdminDep, service: OrgServiceDep, session: SessionDep
) -> ApiKeyCreated:
    key, plaintext = service.create_key(service.get(org_id), actor=caller.actor, scope=body.scope, name=body.name)
    session.commit()
    return ApiKeyCreated(**ApiKeyObject.of(key).model_dump(), key=plaintext)


@router.post(
    "/organizations/{org_id}/api_keys/{key_id}/revoke",
    response_model=ApiKeyObject,
    summary="Revoke an API key (idempotent)",
)
def revoke_key(org_id: str, key_id: str, caller: AdminDep, service: OrgServiceDep, session: SessionDep) -> ApiKeyObject:
    key = service.key(org_id, key_id)
    if key.revoked_at is None:  # idempotent: an already revoked key is answered as it is, unrecorded
        key = service.revoke_key(key.id, actor=caller.actor)
        session.commit()
        forget_all()  # the key stops working in this process now (others: within the TTL)
    return ApiKeyObject.of(key)
