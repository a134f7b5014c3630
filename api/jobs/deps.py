"""``JobServiceDep``: the request's :class:`JobService`, so that no handler builds one
(an ``async`` dependency, as every service dependency is: see :mod:`api.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.deps import SessionDep, SettingsDep
from api.jobs.service import JobService


async def job_service(session: SessionDep, settings: SettingsDep) -> JobService:
    return JobService(session, settings)


JobServiceDep = Annotated[JobService, Depends(job_service)]
