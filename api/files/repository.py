"""Files of an organization (soft-deleted rows are invisible)."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from core.errors import InvalidRequest
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
        desc = order == "desc"
        if after:
            cursor = self.get(org_id, after)
            if cursor is None:
                raise InvalidRequest(f"No file with id {after!r} to continue after.", code="invalid_cursor", param="after")
            if desc:
                query = query.where(
                    or_(File.created_at < cursor.created_at, and_(File.created_at == cursor.created_at, File.id < cursor.id))
                )
            else:
                query = query.where(
                    or_(File.created_at > cursor.created_at, and_(File.created_at == cursor.created_at, File.id > cursor.id))
                )
        keys = (File.created_at.desc(), File.id.desc()) if desc else (File.created_at.asc(), File.id.asc())
        rows = list(self.session.scalars(query.order_by(*keys).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def storage_used(self, org_id: str) -> int:
        total = self.session.scalar(
            select(func.coalesce(func.sum(File.bytes), 0)).where(File.org_id == org_id, File.deleted_at.is_(None))
        )
        return int(total or 0)

    def add(self, row: File) -> File:
        self.session.add(row)
        self.session.flush()
        return row
