"""``ModelServiceDep``: the request's :class:`ModelService`, so that no handler builds one
(an ``async`` dependency, as every service dependency is: see :mod:`api.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.deps import SessionDep
from api.models.service import ModelService


async def model_service(session: SessionDep) -> ModelService:
    return ModelService(session)


ModelServiceDep = Annotated[ModelService, Depends(model_service)]
