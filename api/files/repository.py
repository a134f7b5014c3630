"""Files of an organization (soft-deleted rows are invisible)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Select, func, or_, select

from core.models import File, now
from core.pagination import paginate
from core.repository import OrgScopedRepository


class FileRepository(OrgScopedRepository[File]):
    model = File

    def scoped(self, query: Select) -> Select:
        """The organization's files that are neither deleted nor expired (an expired file is
        gone for its owner at once; the expiry sweep deletes it soon after)."""
        unexpired = or_(File.expires_at.is_(None), File.expires_at > now())
        return super().scoped(query).where(File.deleted_at.is_(None), unexpired)

    def list(
        self, *, after: str | None, limit: int, order: Literal["asc", "desc"], purpose: str | None
    ) -> tuple[list[File], bool]:
        query = self.scoped(select(File))
        if purpose:
            query = query.where(File.purpose == purpose)
        return paginate(
            self.session,
            query,
            keys=(File.created_at, File.id),
            descending=order == "desc",
            after=after,
            cursor=self.get,
            limit=limit,
            noun="file",
        )

    def storage_used(self) -> int:
        total = self.session.scalar(self.scoped(select(func.coalesce(func.sum(File.bytes), 0))))
        return int(total or 0)
