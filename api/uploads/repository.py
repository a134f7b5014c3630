"""Uploads of an organization, and their parts."""

from __future__ import annotations

from sqlalchemy import func, select

from core.models import Upload, UploadPart
from core.repository import OrgScopedRepository


class UploadRepository(OrgScopedRepository[Upload]):
    model = Upload


class UploadPartRepository(OrgScopedRepository[UploadPart]):
    model = UploadPart

    def of_upload(self, upload_id: str) -> dict[str, UploadPart]:
        """The upload's parts by id."""
        return {
            part.id: part
            for part in self.session.scalars(self.scoped(select(UploadPart)).where(UploadPart.upload_id == upload_id))
        }

    def received(self, upload_id: str) -> tuple[int, int]:
        """``(parts, bytes)`` the upload has received."""
        query = self.scoped(select(func.count(), func.coalesce(func.sum(UploadPart.bytes), 0)).select_from(UploadPart))
        count, total = self.session.execute(query.where(UploadPart.upload_id == upload_id)).one()
        return int(count), int(total)
