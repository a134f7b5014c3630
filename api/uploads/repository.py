"""Uploads of an organization, and their parts."""

from __future__ import annotations

from sqlalchemy import func, select

from core.models import Upload, UploadPart, now
from core.repository import OrgScopedRepository
from core.vocab import UploadStatus


class UploadRepository(OrgScopedRepository[Upload]):
    model = Upload

    def reserved(self, *, besides: str | None = None) -> int:
        """The bytes announced by the organization's uploads in progress (pending, not
        expired), but for the upload ``besides``: their parts may fill them, so the storage
        quota holds them."""
        query = self.scoped(select(func.coalesce(func.sum(Upload.bytes), 0))).where(
            Upload.status == UploadStatus.PENDING.value, Upload.expires_at > now()
        )
        if besides is not None:
            query = query.where(Upload.id != besides)
        return int(self.session.scalar(query) or 0)


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
