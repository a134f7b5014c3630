"""``AdminServiceDep``: the request's :class:`AdminService`, so that no handler builds one
(an ``async`` dependency, as every service dependency is: see :mod:`api.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.admin.service import AdminService
from api.deps import SessionDep, SettingsDep


async def admin_service(session: SessionDep, settings: SettingsDep) -> AdminService:
    return AdminService(session, settings)


AdminServiceDep = Annotated[AdminService, Depends(admin_service)]
