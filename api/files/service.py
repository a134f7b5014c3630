"""Files: upload (validate, store, record), list, read, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import Caller
from api.files.repository import FileRepository
from api.files.schemas import ExpiresAfter
from api.files.uploads import Upload
from api.metrics import FILES_UPLOADED, UPLOAD_BYTES
from api.uploads.repository import UploadRepository
from core.audit import service as audit
from core.datasets import Limits, Report, validate_stream
from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from core.models import File, now
from core.orgs.repository import OrgRepository
from core.quoting import quoted
from core.retention import active_jobs_using_file, delete_file
from core.settings import Settings
from core.storage import ObjectStore, PutResult, org_key
from core.vocab import FileStatus

SUPPORTED_PURPOSES = ("fine-tune",)


@dataclass(frozen=True)
class NewFile:
    """A validated file about to be stored: its name, purpose, validation report and
    ``expires_after.seconds`` (None: kept until deleted)."""

    filename: str
    purpose: str
    report: Report
    expires_after_s: int | None


def check_purpose(purpose: str | None) -> str:
    """The purpose, if guardtune accepts it (400 otherwise)."""
    if not purpose:
        raise InvalidRequest("Missing the 'purpose' field (use 'fine-tune').", code="missing_purpose", param="purpose")
    if purpose not in SUPPORTED_PURPOSES:
        raise InvalidRequest(
            f"Unsupported purpose {quoted(purpose)}: guardtune accepts only files with purpose 'fine-tune'.",
            code="invalid_purpose",
            param="purpose",
        )
    return purpose


def form_expires_after(fields: dict[str, str]) -> int | None:
    """``expires_after`` of a multipart upload (the SDK sends ``expires_after[anchor]`` and
    ``expires_after[seconds]``), checked as the JSON one is: its seconds, or None if absent."""
    given = {k: fields[f"expires_after[{k}]"] for k in ("anchor", "seconds") if f"expires_after[{k}]" in fields}
    if not given:
        return None
    try:
        return ExpiresAfter.model_validate(given).seconds
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(["expires_after", *(str(p) for p in first["loc"])])
        raise InvalidRequest(f"{first['msg']} (param: {param})", code="invalid_value", param=param) from None


def storage_quota(settings: Settings, org_max: int | None) -> int:
    return settings.max_storage_bytes_per_org if org_max is None else org_max


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n} bytes"


class FileService:
    def __init__(self, session: Session, settings: Settings, store: ObjectStore):
        self.session = session
        self.settings = settings
        self.store = store

    def _files(self, caller: Caller) -> FileRepository:
        return FileRepository(self.session, caller.org_id)

    def get(self, caller: Caller, file_id: str) -> File:
        row = self._files(caller).get(file_id)
        if row is None:
            raise NotFound(f"No such file: {quoted(file_id)}.", code="file_not_found", param="file_id")
        return row

    def list(
        self, caller: Caller, *, after: str | None, limit: int, order: Literal["asc", "desc"], purpose: str | None
    ) -> tuple[list[File], bool]:
        return self._files(caller).list(after=after, limit=limit, order=order, purpose=purpose)

    def create(self, caller: Caller, upload: Upload) -> File:
        """Validate the received upload, check the quota, store it, record it (one transaction)."""
        purpose = check_purpose(upload.fields.get("purpose"))
        expires_after_s = form_expires_after(upload.fields)
        assert upload.spool is not None and upload.filename is not None
        spool = upload.spool

        artifacts = self.artifact_bytes(caller.org_id)
        self.check_quota(caller, upload.size, artifacts)  # early: most refusals stop here
        self.session.rollback()  # hold no transaction open while validating and storing
        report = validate_stream(spool, Limits.from_settings(self.settings))
        spool.seek(0)
        with self.stored(
            caller,
            NewFile(upload.filename, purpose, report, expires_after_s),
            write=lambda key: self.store.put_stream(key, spool, max_bytes=self.settings.max_file_bytes),
            artifacts=artifacts,
        ) as row:
            pass
        return row

    @contextmanager
    def stored(
        self,
        caller: Caller,
        new: NewFile,
        *,
        write: Callable[[str], PutResult],
        artifacts: int,
        upload_id: str | None = None,
    ) -> Iterator[File]:
        """Store a validated file's bytes (``write(key)``), check the quota again under the
        organization's row lock (concurrent uploads check in turn), add its row and audit
        ``file.upload``; the caller's block runs in the same transaction, committed after
        it. On any failure nothing stays: the transaction is rolled back and the object deleted.
        ``upload_id``: the upload completing into the file (its reservation is the file's)."""
        file_id = new_id("file")
        key = org_key(caller.org_id, "files", file_id)
        put = write(key)
        try:
            self.check_quota(caller, put.bytes, artifacts, lock=True, upload_id=upload_id)
            created = now()
            report = new.report
            row = self._files(caller).add(
                File(
                    id=file_id,
                    org_id=caller.org_id,
                    filename=new.filename,
                    purpose=new.purpose,
                    bytes=put.bytes,
                    sha256=put.sha256,
                    storage_key=key,
                    status=FileStatus.PROCESSED if report.ok else FileStatus.ERROR,
                    status_details=report.details(),
                    n_examples=report.n_examples,
                    n_tokens=report.est_tokens,
                    format=report.format,
                    errors=[issue.to_dict() for issue in report.errors],
                    created_at=created,
                    expires_at=created + new.expires_after_s if new.expires_after_s else None,
                )
            )
            audit.record(
                self.session,
                actor=caller.actor,
                action="file.upload",
                target=file_id,
                details={
                    "org_id": caller.org_id,
                    "filename": new.filename,
                    "bytes": put.bytes,
                    "sha256": put.sha256,
                    "status": row.status,
                    "n_examples": report.n_examples,
                    "error_count": report.error_count,
                    "expires_at": row.expires_at,
                },
            )
            yield row
            self.session.commit()
        except BaseException:
            self.session.rollback()
            self.store.delete(key)  # the database never saw it: leave no orphan behind
            raise
        FILES_UPLOADED.inc()
        UPLOAD_BYTES.inc(put.bytes)

    def artifact_bytes(self, org_id: str) -> int:
        """What the organization's jobs store (scan results, reference caches, checkpoints,
        adapters: everything under its ``jobs/`` prefix), counted in its quota with its files."""
        return self.store.total_bytes(org_key(org_id, "jobs") + "/")

    def check_quota(
        self, caller: Caller, size: int, artifacts: int, *, lock: bool = False, upload_id: str | None = None
    ) -> None:
        """409 unless ``size`` more bytes fit the organization's quota beside its files, its
        job ``artifacts`` and its uploads in progress (but ``upload_id``, the one completing
        into these bytes); ``lock``: under the organization's row lock."""
        org = OrgRepository(self.session).get(caller.org_id, for_update=lock)
        quota = storage_quota(self.settings, org.max_storage_bytes if org else None)
        reserved = UploadRepository(self.session, caller.org_id).reserved(besides=upload_id)
        used = self._files(caller).storage_used() + artifacts + reserved
        if used + size > quota:
            raise Conflict(
                f"Storage quota exceeded: this organization stores {_mb(used)} (files and job artifacts, and "
                f"uploads in progress) of its {_mb(quota)} quota and this file ({_mb(size)}) would go over it. "
                "Delete files you no longer need (DELETE /v1/files/{file_id}) or ask your operator to raise the quota.",
                code="storage_quota_exceeded",
                param="file",
                headers={"x-should-retry": "false"},
            )

    def content(self, caller: Caller, file_id: str) -> tuple[File, Iterator[bytes]]:
        row = self.get(caller, file_id)
        return row, self.store.iter_chunks(row.storage_key)

    def delete(self, caller: Caller, file_id: str) -> File:
        # Under the organization's row lock, as job creation: no job can start using the
        # file between this check and the commit.
        OrgRepository(self.session).get(caller.org_id, for_update=True)
        row = self.get(caller, file_id)
        users = active_jobs_using_file(self.session, caller.org_id, file_id)
        if users:
            raise Conflict(
                f"File {file_id} is used by the active fine-tuning job {users[0]}; cancel it or wait for it "
                "to finish before deleting the file.",
                code="file_in_use",
                param="file_id",
                headers={"x-should-retry": "false"},
            )
        delete_file(self.session, row, actor=caller.actor, action="file.delete", store=self.store)
        return row
