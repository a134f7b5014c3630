"""``FileServiceDep``: the request's :class:`FileService`, so that no handler builds one
(an ``async`` dependency, as every service dependency is: see :mod:`api.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.deps import SessionDep, SettingsDep, StoreDep
from api.files.service import FileService


async def file_service(session: SessionDep, settings: SettingsDep, store: StoreDep) -> FileService:
    return FileService(session, settings, store)


FileServiceDep = Annotated[FileService, Depends(file_service)]
