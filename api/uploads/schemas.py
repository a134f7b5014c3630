"""``upload`` and ``upload.part`` objects and the request bodies (OpenAI's shapes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.files.schemas import ExpiresAfter, FileObject, StoredFileFields
from core.models import File, Upload, UploadPart, now
from core.vocab import AS_LITERAL, UploadStatus

MAX_PART_IDS = 10_000  # parts of one upload (the most a complete may list)


class UploadCreate(BaseModel):
    """``POST /v1/uploads``."""

    model_config = ConfigDict(extra="forbid")

    bytes: int = Field(ge=1, description="The file's size: the completed parts must add up to it")
    filename: str = Field(min_length=1, max_length=512)
    mime_type: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=32)
    expires_after: ExpiresAfter | None = Field(None, description="Applies to the file the upload completes into")


class UploadComplete(BaseModel):
    """``POST /v1/uploads/{upload_id}/complete``."""

    model_config = ConfigDict(extra="forbid")

    part_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_PART_IDS, description="The parts, in the file's order"
    )
    md5: str | None = Field(None, max_length=64, description="The file's MD5 (hex): checked before the file is made")


def shown_status(row: Upload) -> UploadStatus:
    """A pending upload past ``expires_at`` is expired (before the sweep marks it)."""
    status = UploadStatus(row.status)
    return UploadStatus.EXPIRED if status is UploadStatus.PENDING and row.expires_at <= now() else status


class UploadObject(StoredFileFields):
    object: Literal["upload"] = "upload"
    status: Annotated[UploadStatus, AS_LITERAL]
    expires_at: int
    file: FileObject | None = None

    @classmethod
    def of(cls, row: Upload, file: File | None = None) -> UploadObject:
        return cls(
            **cls.shared(row),
            status=shown_status(row),
            expires_at=row.expires_at,
            file=FileObject.of(file) if file is not None else None,
        )


class UploadPartObject(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

    @classmethod
    def of(cls, row: UploadPart) -> UploadPartObject:
        return cls(id=row.id, created_at=row.created_at, upload_id=row.upload_id)


# The multipart body of ``POST /v1/uploads/{upload_id}/parts``, for the OpenAPI document
# (the route parses the stream itself).
PART_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "title": "UploadPartCreate",
                    "required": ["data"],
                    "properties": {
                        "data": {
                            "type": "string",
                            "format": "binary",
                            "description": "The part's bytes (64 MB at most)",
                        }
                    },
                }
            }
        },
    }
}
