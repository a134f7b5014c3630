"""``UploadServiceDep``: the request's :class:`UploadService` (an ``async`` dependency, as
every service dependency is: see :mod:`api.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.deps import SessionDep, SettingsDep, StoreDep
from api.uploads.service import UploadService


async def upload_service(session: SessionDep, settings: SettingsDep, store: StoreDep) -> UploadService:
    return UploadService(session, settings, store)


UploadServiceDep = Annotated[UploadService, Depends(upload_service)]
