"""``file`` objects (OpenAI's shape)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from core.models import File, Upload
from core.vocab import AS_LITERAL, FileStatus

EXPIRES_AFTER_MIN_S = 3600  # an hour
EXPIRES_AFTER_MAX_S = 30 * 24 * 3600  # 30 days


class ExpiresAfter(BaseModel):
    """A file's expiration policy (OpenAI's): deleted ``seconds`` after its creation."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=EXPIRES_AFTER_MIN_S, le=EXPIRES_AFTER_MAX_S)


class StoredFileFields(BaseModel):
    """The fields OpenAI's ``file`` and ``upload`` objects share, in their order on the wire;
    each object fixes ``object`` to its own name and adds its fields after these."""

    id: str
    object: str
    bytes: int
    created_at: int
    filename: str
    purpose: str

    @staticmethod
    def shared(row: File | Upload) -> dict[str, Any]:
        """The shared fields' values of a stored file or upload."""
        return {
            "id": row.id,
            "bytes": row.bytes,
            "created_at": row.created_at,
            "filename": row.filename,
            "purpose": row.purpose,
        }


class FileObject(StoredFileFields):
    object: Literal["file"] = "file"
    status: Annotated[FileStatus, AS_LITERAL]
    status_details: str | None = None
    expires_at: int | None = None

    @classmethod
    def of(cls, row: File) -> FileObject:
        return cls(
            **cls.shared(row),
            status=FileStatus(row.status),
            status_details=row.status_details,
            expires_at=row.expires_at,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


# The multipart body of ``POST /v1/files``, for the OpenAPI document (the route parses
# the stream itself, so it can stop at the size limit instead of spooling everything).
UPLOAD_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "title": "FileUpload",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A .jsonl file: chat `messages` or prompt/completion examples.",
                        },
                        "purpose": {"type": "string", "enum": ["fine-tune"]},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": EXPIRES_AFTER_MIN_S,
                            "maximum": EXPIRES_AFTER_MAX_S,
                            "description": "Delete the file this many seconds after its creation.",
                        },
                    },
                }
            }
        },
    }
}
