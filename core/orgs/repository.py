"""Organizations (the tenants themselves) and their API keys."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.db import begin_write
from core.models import ApiKey, Job, Organization
from core.pagination import paginate
from core.repository import OrgScopedRepository


class OrgRepository:
    def __init__(self, session: Session):
        self.session = session

    def get(self, org_id: str, *, for_update: bool = False) -> Organization | None:
        """``for_update``: lock the organization's row until the transaction ends, so checks
        and writes made under it (the concurrent-job count, file deletes) happen one at a
        time per organization. ``FOR UPDATE`` does that on Postgres; SQLite ignores it, so
        there the transaction is begun as a write transaction (see :func:`core.db.begin_write`)."""
        query = select(Organization).where(Organization.id == org_id)
        if for_update:
            begin_write(self.session)
            query = query.with_for_update()
        return self.session.scalar(query)

    def by_ref(self, ref: str) -> Organization | None:
        """An organization by id or by name."""
        return self.session.scalar(select(Organization).where(or_(Organization.id == ref, Organization.name == ref)))

    def name_taken(self, name: str) -> bool:
        return self.session.scalar(select(Organization.id).where(Organization.name == name)) is not None

    def page(self, *, after: str | None, limit: int) -> tuple[list[Organization], bool]:
        """Oldest first, a keyset page (:func:`core.pagination.paginate`)."""
        return paginate(
            self.session,
            select(Organization),
            keys=(Organization.created_at, Organization.id),
            descending=False,
            after=after,
            cursor=self.get,
            limit=limit,
            noun="organization",
        )

    def by_creation(self) -> list[Organization]:
        """Every organization, oldest first (then by name)."""
        return list(self.session.scalars(select(Organization).order_by(Organization.created_at, Organization.name)))

    def active_key_counts(self) -> dict[str, int]:
        """Per organization id, its keys not revoked (organizations without any are absent)."""
        return dict(
            self.session.execute(
                select(ApiKey.org_id, func.count()).where(ApiKey.revoked_at.is_(None)).group_by(ApiKey.org_id)
            ).all()
        )

    def job_counts(self) -> dict[str, int]:
        """Per organization id, its jobs (organizations without any are absent)."""
        return dict(self.session.execute(select(Job.org_id, func.count()).group_by(Job.org_id)).all())

    def add(self, row: Organization) -> Organization:
        self.session.add(row)
        self.session.flush()
        return row


class KeyRepository(OrgScopedRepository[ApiKey]):
    """An organization's API keys."""

    model = ApiKey

    def all(self) -> list[ApiKey]:
        """Oldest first."""
        return list(self.session.scalars(self.scoped(select(ApiKey)).order_by(ApiKey.created_at, ApiKey.id)))
