"""Base models of the registry (shared by all) and an organization's released models."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import BaseModelEntry, ReleasedModel

UNUSABLE_BASE_STATUSES = ("failed",)


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

    def released(self, org_id: str, model_id: str) -> ReleasedModel | None:
        """The organization's released model ``model_id``, unless revoked."""
        return self.session.scalar(
            select(ReleasedModel).where(
                ReleasedModel.org_id == org_id, ReleasedModel.id == model_id, ReleasedModel.revoked_at.is_(None)
            )
        )

    def released_list(self, org_id: str) -> list[ReleasedModel]:
        return list(
            self.session.scalars(
                select(ReleasedModel)
                .where(ReleasedModel.org_id == org_id, ReleasedModel.revoked_at.is_(None))
                .order_by(ReleasedModel.created_at, ReleasedModel.id)
            )
        )
