"""Released models of an organization (the operator's view: every organization's)."""

from __future__ import annotations

from sqlalchemy import func, or_, select

from core.models import ReleasedModel
from core.repository import OrgScopedRepository


class ReleaseRepository(OrgScopedRepository[ReleasedModel]):
    model = ReleasedModel

    def serving(self, model_id: str) -> ReleasedModel | None:
        """The released model ``model_id``, unless revoked."""
        return self.session.scalar(
            self.scoped(select(ReleasedModel)).where(ReleasedModel.id == model_id, ReleasedModel.revoked_at.is_(None))
        )

    def serving_list(self) -> list[ReleasedModel]:
        """The models not revoked, oldest first."""
        return list(
            self.session.scalars(
                self.scoped(select(ReleasedModel))
                .where(ReleasedModel.revoked_at.is_(None))
                .order_by(ReleasedModel.created_at, ReleasedModel.id)
            )
        )

    def digest_serving(self, sha256: str) -> bool:
        """Whether a model not revoked has the adapter digest ``sha256``."""
        query = self.scoped(select(ReleasedModel.id)).where(
            ReleasedModel.sha256 == sha256, ReleasedModel.revoked_at.is_(None)
        )
        return self.session.scalar(query.limit(1)) is not None

    def of_job(self, job_id: str) -> ReleasedModel | None:
        """The model released from the job ``job_id``, revoked or not."""
        return self.session.scalar(self.scoped(select(ReleasedModel)).where(ReleasedModel.job_id == job_id))

    def newest_first(self, *, revoked: bool | None = None) -> list[ReleasedModel]:
        """Every released model, newest first; ``revoked``: only revoked (True) or serving (False)."""
        query = self.scoped(select(ReleasedModel))
        if revoked is True:
            query = query.where(ReleasedModel.revoked_at.is_not(None))
        elif revoked is False:
            query = query.where(ReleasedModel.revoked_at.is_(None))
        return list(self.session.scalars(query.order_by(ReleasedModel.created_at.desc())))

    def serving_per_base(self) -> dict[str, int]:
        """How many models are serving on each base model."""
        return dict(
            self.session.execute(
                self.scoped(select(ReleasedModel.base_model, func.count()))
                .where(ReleasedModel.revoked_at.is_(None))
                .group_by(ReleasedModel.base_model)
            ).all()
        )

    def related_ids(self, ref: str) -> set[str]:
        """``ref`` with the ids of the job and model on either side of it: a job and the model
        released from it are one story."""
        ids = {ref}
        for released in self.session.scalars(
            self.scoped(select(ReleasedModel)).where(or_(ReleasedModel.job_id == ref, ReleasedModel.id == ref))
        ):
            ids |= {released.id, released.job_id}
        return ids
