"""Base models of the registry, shared by every organization (an organization's released
models are :class:`core.releases.repository.ReleaseRepository`'s)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import BaseModelEntry
from core.vocab import BaseModelStatus

UNUSABLE_BASE_STATUSES = (BaseModelStatus.FAILED,)


class ModelRepository:
    def __init__(self, session: Session):
        self.session = session

    def base_model(self, model_id: str) -> BaseModelEntry | None:
        row = self.session.get(BaseModelEntry, model_id)
        return row if row is not None and row.status not in UNUSABLE_BASE_STATUSES else None

    def base_models(self) -> list[BaseModelEntry]:
        return list(
            self.session.scalars(
                select(BaseModelEntry)
                .where(BaseModelEntry.status.not_in(UNUSABLE_BASE_STATUSES))
                .order_by(BaseModelEntry.id)
            )
        )
