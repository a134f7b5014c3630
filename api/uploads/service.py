"""Uploads: create, add parts, complete into a file (validated and stored as ``POST
/v1/files`` does, through :class:`~api.files.service.FileService`), cancel.

Storage: each part is an object of its own under ``orgs/<org>/uploads/<upload>/``, in the
local folder and on S3 alike; ``complete`` reads them in the order given (validating the
JSONL and computing the MD5), then :meth:`~core.storage.ObjectStore.compose` writes the
file from them (on S3 one multipart upload streamed from the parts; in the folder a temp
file renamed into place) and the parts' objects are deleted. A refused request (unknown part,
MD5 mismatch, wrong size, an upload no longer pending) changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from api.deps import Caller
from api.files.service import FileService, NewFile, check_purpose
from api.files.uploads import Upload as ReceivedFile
from api.files.uploads import check_jsonl
from api.input_guard import unstorable
from api.uploads.repository import UploadPartRepository, UploadRepository
from api.uploads.schemas import MAX_PART_IDS, UploadComplete, UploadCreate, shown_status
from core.audit import service as audit
from core.datasets import Limits, validate_chunks
from core.errors import Conflict, GuardtuneError, InvalidRequest, NotFound, PayloadTooLarge
from core.ids import new_id
from core.models import File, Upload, UploadPart, now
from core.quoting import quoted
from core.retention import UPLOAD_TTL_S, drop_parts, end_upload, parts_prefix
from core.settings import Settings
from core.storage import ConcatReader, ObjectStore
from core.vocab import UploadStatus

MAX_PART_BYTES = 64 * 1024 * 1024  # one part (OpenAI's limit)


class UploadService:
    def __init__(self, session: Session, settings: Settings, store: ObjectStore):
        self.session = session
        self.settings = settings
        self.store = store
        self.files = FileService(session, settings, store)

    @property
    def max_part_bytes(self) -> int:
        return min(MAX_PART_BYTES, self.settings.max_upload_bytes)

    def _uploads(self, caller: Caller) -> UploadRepository:
        return UploadRepository(self.session, caller.org_id)

    def _parts(self, caller: Caller) -> UploadPartRepository:
        return UploadPartRepository(self.session, caller.org_id)

    def create(self, caller: Caller, body: UploadCreate) -> Upload:
        """A pending upload of ``body.bytes`` bytes, accepting parts for an hour. Refused up
        front: an unsupported purpose, a name or type that is not JSONL (415), a size over
        ``GUARDTUNE_MAX_UPLOAD_BYTES`` (413) or over the storage quota (409)."""
        purpose = check_purpose(body.purpose)
        filename = os.path.basename(body.filename.replace("\\", "/"))
        if why := unstorable(filename) or ("is empty" if not filename else None):
            raise InvalidRequest(f"The file name {why}.", code="invalid_value", param="filename")
        if why := unstorable(body.mime_type):
            raise InvalidRequest(f"The mime_type {why}.", code="invalid_value", param="mime_type")
        check_jsonl(filename, body.mime_type, param="filename")
        limit = self.settings.max_upload_bytes
        if body.bytes > limit:
            raise PayloadTooLarge(
                f"The file ({body.bytes} bytes) is larger than the upload limit of {limit} bytes.",
                code="file_too_large",
                param="bytes",
                headers={"x-should-retry": "false"},
            )
        self.files.check_quota(caller, body.bytes, self.files.artifact_bytes(caller.org_id))
        created = now()
        row = self._uploads(caller).add(
            Upload(
                id=new_id("upload", sep="_"),
                org_id=caller.org_id,
                filename=filename,
                purpose=purpose,
                bytes=body.bytes,
                mime_type=body.mime_type,
                status=UploadStatus.PENDING.value,
                file_expires_after_s=body.expires_after.seconds if body.expires_after else None,
                created_at=created,
                expires_at=created + UPLOAD_TTL_S,
            )
        )
        audit.record(
            self.session,
            actor=caller.actor,
            action="upload.create",
            target=row.id,
            details={"org_id": caller.org_id, "filename": filename, "bytes": body.bytes, "purpose": purpose},
        )
        self.session.commit()
        return row

    def pending(self, caller: Caller, upload_id: str, *, lock: bool = False) -> Upload:
        """The organization's upload, if still pending (404 if unknown, 409 if it ended or expired)."""
        row = self._uploads(caller).get(upload_id, for_update=lock)
        if row is None:
            raise NotFound(f"No such upload: {quoted(upload_id)}.", code="upload_not_found", param="upload_id")
        status = shown_status(row)
        if status is not UploadStatus.PENDING:
            raise Conflict(
                f"Upload {row.id} is {status.value}: it takes no more parts and cannot be completed or cancelled."
                + (" Uploads accept parts for an hour; create a new one." if status is UploadStatus.EXPIRED else ""),
                code=f"upload_{status.value}",
                param="upload_id",
                headers={"x-should-retry": "false"},
            )
        return row

    def add_part(self, caller: Caller, upload_id: str, received: ReceivedFile) -> UploadPart:
        """Store the received part as an object of its own and record it, if the upload is
        still pending and its parts stay within the upload's ``bytes``."""
        assert received.spool is not None
        part_id = new_id("part", sep="_")
        key = parts_prefix(caller.org_id, upload_id) + part_id
        put = self.store.put_stream(key, received.spool, max_bytes=self.max_part_bytes)
        try:
            row = self.pending(caller, upload_id, lock=True)  # parts of one upload are added in turn
            count, total = self._parts(caller).received(upload_id)
            if total + put.bytes > row.bytes:
                raise InvalidRequest(
                    f"This part ({put.bytes} bytes) would bring upload {row.id} to {total + put.bytes} bytes, "
                    f"over the {row.bytes} bytes it was created for. Cancel it and create a new one.",
                    code="upload_bytes_exceeded",
                    param="data",
                )
            if count >= MAX_PART_IDS:
                raise InvalidRequest(
                    f"Upload {row.id} has {count} parts, the most one upload takes.",
                    code="too_many_parts",
                    param="data",
                )
            part = self._parts(caller).add(
                UploadPart(id=part_id, upload_id=row.id, org_id=caller.org_id, bytes=put.bytes, storage_key=key)
            )
            self.session.commit()
        except BaseException:
            self.session.rollback()
            self.store.delete(key)
            raise
        return part

    def complete(self, caller: Caller, upload_id: str, body: UploadComplete) -> tuple[Upload, File]:
        """Check the parts (known, each once, adding up to the upload's ``bytes``) and the
        MD5, then make the file: validated, stored and recorded as ``POST /v1/files`` does,
        the upload ``completed`` in the same commit; its parts' objects go after it."""
        row = self.pending(caller, upload_id)
        if len(set(body.part_ids)) != len(body.part_ids):
            raise InvalidRequest("part_ids lists a part more than once.", code="duplicate_part_id", param="part_ids")
        parts = self._parts(caller).of_upload(row.id)
        if unknown := [p for p in body.part_ids if p not in parts]:
            raise InvalidRequest(
                f"No such part of upload {row.id}: {quoted(unknown[0])}.", code="part_not_found", param="part_ids"
            )
        total = sum(parts[p].bytes for p in body.part_ids)
        if total != row.bytes:
            raise InvalidRequest(
                f"The parts listed hold {total} bytes; upload {row.id} was created for {row.bytes} bytes.",
                code="upload_bytes_mismatch",
                param="part_ids",
            )
        keys = [parts[p].storage_key for p in body.part_ids]
        filename, purpose, expires_after_s = row.filename, row.purpose, row.file_expires_after_s
        artifacts = self.files.artifact_bytes(caller.org_id)
        self.files.check_quota(caller, total, artifacts, upload_id=row.id)
        self.session.rollback()  # hold no transaction open while reading the parts

        with self._parts_in_place(caller, upload_id):
            with ConcatReader(self.store, keys) as reader:
                report = validate_chunks(reader.chunks(), Limits.from_settings(self.settings))
                for _ in reader.chunks():  # validation may stop early; the MD5 covers everything
                    pass
                md5 = reader.md5.hexdigest()
            if body.md5 is not None and body.md5.strip().lower() != md5:
                raise InvalidRequest(
                    f"The parts' MD5 is {md5}, not the {quoted(body.md5)} given: a part is not what was meant. "
                    "Nothing was stored.",
                    code="md5_mismatch",
                    param="md5",
                )
            with self.files.stored(
                caller,
                NewFile(filename, purpose, report, expires_after_s),
                write=lambda key: self.store.compose(key, keys),
                artifacts=artifacts,
                upload_id=upload_id,
            ) as file:
                row = self.pending(caller, upload_id, lock=True)  # a concurrent complete or cancel won
                row.file_id = file.id
                end_upload(self.session, row, UploadStatus.COMPLETED, actor=caller.actor, action="upload.complete")
        drop_parts(self.session, row, reason="upload.complete", store=self.store)
        return row, file

    @contextmanager
    def _parts_in_place(self, caller: Caller, upload_id: str) -> Iterator[None]:
        """While the parts are read: a store failure because a concurrent cancel (or the
        expiry sweep) deleted them answers as the upload no longer pending does (409)."""
        try:
            yield
        except GuardtuneError:
            raise
        except Exception:
            self.session.rollback()
            self.pending(caller, upload_id)
            raise

    def cancel(self, caller: Caller, upload_id: str) -> Upload:
        """The pending upload becomes ``cancelled``; its parts' objects are deleted."""
        row = self.pending(caller, upload_id, lock=True)
        end_upload(self.session, row, UploadStatus.CANCELLED, actor=caller.actor, action="upload.cancel")
        self.session.commit()
        drop_parts(self.session, row, reason="upload.cancel", store=self.store)
        return row
