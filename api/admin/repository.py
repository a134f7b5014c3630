"""Organizations and their API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.pagination import paginate
from core.db import begin_write
from core.models import ApiKey, Organization


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

    def get_by_name(self, name: str) -> Organization | None:
        return self.session.scalar(select(Organization).where(Organization.name == name))

    def list(self, *, after: str | None, limit: int) -> tuple[list[Organization], bool]:
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

    def add(self, row: Organization | ApiKey) -> None:
        self.session.add(row)
        self.session.flush()

    # -- keys (always within one organization) -------------------------------------------
    def key(self, org_id: str, key_id: str) -> ApiKey | None:
        return self.session.scalar(select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id == key_id))

    def keys(self, org_id: str) -> list[ApiKey]:
        return list(
            self.session.scalars(select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at, ApiKey.id))
        )
