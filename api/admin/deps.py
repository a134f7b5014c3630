"""``OrgServiceDep``: the request's :class:`~core.orgs.service.OrgService`, so that no handler
builds one (an ``async`` dependency, as every service dependency is: see :mod:`api.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.deps import SessionDep, SettingsDep
from core.orgs.service import OrgService


async def org_service(session: SessionDep, settings: SettingsDep) -> OrgService:
    return OrgService(session, settings)


OrgServiceDep = Annotated[OrgService, Depends(org_service)]
