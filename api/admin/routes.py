"""``/v1/admin``: organizations and API keys (admin-scoped keys only; every change audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.admin.deps import AdminServiceDep
from api.admin.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyObject,
    OrganizationCreate,
    OrganizationObject,
    OrganizationUpdate,
)
from api.auth import ADMIN
from api.deps import AdminDep
from api.schemas import COMMON_ERRORS, CursorPage, ErrorResponse, ListObject, page

router = APIRouter(
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
def create_org(body: OrganizationCreate, caller: AdminDep, service: AdminServiceDep) -> OrganizationObject:
    return OrganizationObject.of(service.create_org(caller, body))


@router.get("/organizations", response_model=CursorPage[OrganizationObject], summary="List organizations")
def list_orgs(
    service: AdminServiceDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    rows, has_more = service.list_orgs(after=after, limit=limit)
    return page([OrganizationObject.of(r) for r in rows], has_more)


@router.get("/organizations/{org_id}", response_model=OrganizationObject, summary="Retrieve an organization")
def retrieve_org(org_id: str, service: AdminServiceDep) -> OrganizationObject:
    return OrganizationObject.of(service.get_org(org_id))


@router.patch("/organizations/{org_id}", response_model=OrganizationObject, summary="Change an organization's limits")
def update_org(org_id: str, body: OrganizationUpdate, caller: AdminDep, service: AdminServiceDep) -> OrganizationObject:
    return OrganizationObject.of(service.update_org(caller, org_id, body))


@router.get(
    "/organizations/{org_id}/api_keys", response_model=ListObject[ApiKeyObject], summary="List an organization's keys"
)
def list_keys(org_id: str, service: AdminServiceDep) -> dict:
    return {"object": "list", "data": [ApiKeyObject.of(k) for k in service.list_keys(org_id)]}


@router.post(
    "/organizations/{org_id}/api_keys",
    response_model=ApiKeyCreated,
    summary="Create an API key (the secret is shown once)",
)
def create_key(org_id: str, body: ApiKeyCreate, caller: AdminDep, service: AdminServiceDep) -> ApiKeyCreated:
    key, plaintext = service.create_key(caller, org_id, body)
    return ApiKeyCreated(**ApiKeyObject.of(key).model_dump(), key=plaintext)


@router.post(
    "/organizations/{org_id}/api_keys/{key_id}/revoke",
    response_model=ApiKeyObject,
    summary="Revoke an API key (idempotent)",
)
def revoke_key(org_id: str, key_id: str, caller: AdminDep, service: AdminServiceDep) -> ApiKeyObject:
    return ApiKeyObject.of(service.revoke_key(caller, org_id, key_id))
