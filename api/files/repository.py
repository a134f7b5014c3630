"""Files of an organization (soft-deleted rows are invisible)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.pagination import paginate
from core.models import File


class FileRepository:
    def __init__(self, session: Session):
        self.session = session

    def _live(self, org_id: str):
        return select(File).where(File.org_id == org_id, File.deleted_at.is_(None))

    def get(self, org_id: str, file_id: str) -> File | None:
        return self.session.scalar(self._live(org_id).where(File.id == file_id))

    def list(
        self, org_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"], purpose: str | None
    ) -> tuple[list[File], bool]:
        query = self._live(org_id)
        if purpose:
            query = query.where(File.purpose == purpose)
        return paginate(
            self.session,
            query,
            keys=(File.created_at, File.id),
            descending=order == "desc",
            after=after,
            cursor=lambda file_id: self.get(org_id, file_id),
            limit=limit,
            noun="file",
        )

    def storage_used(self, org_id: str) -> int:
        total = self.session.scalar(
            select(func.coalesce(func.sum(File.bytes), 0)).where(File.org_id == org_id, File.deleted_at.is_(None))
        )
        return int(total or 0)

    def add(self, row: File) -> File:
        self.session.add(row)
        self.session.flush()
        return row
