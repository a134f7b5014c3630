"""Files and uploads leaving storage: a file's deletion (by its owner, or when its
``expires_after`` ran out), the end of an upload's parts (cancelled, expired or completed
into a file) and the expiry sweep that the worker runs every ``GUARDTUNE_REAPER_INTERVAL_S``.

Rows change and are audited in one commit; the stored objects go after it
(:func:`core.deletion.delete_or_defer`: retried, then left to the deletion sweep), so a
rolled-back change never loses bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core import deletion
from core.audit import service as audit
from core.jobs.vocab import ACTIVE
from core.models import File, Job, Upload, now
from core.storage import ObjectStore, get_store, org_key
from core.vocab import UploadStatus

UPLOAD_TTL_S = 3600  # an upload accepts parts for an hour (OpenAI's)
SWEEP_BATCH = 100


def active_jobs_using_file(session: Session, org_id: str, file_id: str) -> list[str]:
    """The organization's unfinished jobs that train or validate on the file."""
    return list(
        session.scalars(
            select(Job.id).where(
                Job.org_id == org_id,
                Job.status.in_(ACTIVE),
                or_(Job.training_file_id == file_id, Job.validation_file_id == file_id),
            )
        )
    )


def delete_file(session: Session, row: File, *, actor: str, action: str, store: ObjectStore) -> None:
    """Mark the file deleted (the row stays: jobs refer to it) and clear what quotes its
    content, audit ``action``, commit; then delete its object."""
    row.deleted_at = now()
    row.errors, row.status_details = [], None
    audit.record(
        session,
        actor=actor,
        action=action,
        target=row.id,
        details={"org_id": row.org_id, "bytes": row.bytes, "sha256": row.sha256},
    )
    session.commit()
    deletion.delete_or_defer(session, row.storage_key, reason=f"{action} {row.id}", store=store)


def parts_prefix(org_id: str, upload_id: str) -> str:
    """Where an upload's parts are stored, one object each."""
    return org_key(org_id, "uploads", upload_id) + "/"


def end_upload(session: Session, row: Upload, status: UploadStatus, *, actor: str, action: str) -> None:
    """Give the pending upload its final ``status`` and audit ``action`` (in the session's
    transaction; after its commit, :func:`drop_parts`)."""
    row.status = status.value
    audit.record(
        session,
        actor=actor,
        action=action,
        target=row.id,
        details={"org_id": row.org_id, "bytes": row.bytes, "file_id": row.file_id},
    )


def drop_parts(session: Session, row: Upload, *, reason: str, store: ObjectStore) -> None:
    """Delete the ended upload's parts' objects (a completed upload's bytes live on in its file)."""
    prefix = parts_prefix(row.org_id, row.id)
    deletion.delete_or_defer(session, prefix, prefix=True, reason=f"{reason} {row.id}", store=store)


@dataclass(frozen=True)
class ExpiryResult:
    files: int
    uploads: int


def sweep_expired(session: Session, store: ObjectStore | None = None, limit: int = SWEEP_BATCH) -> ExpiryResult:
    """Delete up to ``limit`` files past their ``expires_at`` (``file.expire``; a file an
    unfinished job uses waits for the job) and end up to ``limit`` pending uploads past
    theirs (``upload.expire``), each in a commit of its own. Rows are locked and checked
    again first, so a concurrent delete or complete wins cleanly."""
    store = store or get_store()
    t = now()
    files = 0
    due_files = select(File.id).where(File.deleted_at.is_(None), File.expires_at <= t).order_by(File.expires_at)
    for file_id in list(session.scalars(due_files.limit(limit))):
        row = session.scalar(select(File).where(File.id == file_id, File.deleted_at.is_(None)).with_for_update())
        if row is None or active_jobs_using_file(session, row.org_id, row.id):
            session.rollback()
            continue
        delete_file(session, row, actor=audit.SYSTEM, action="file.expire", store=store)
        files += 1
    uploads = 0
    pending = UploadStatus.PENDING.value
    due_uploads = select(Upload.id).where(Upload.status == pending, Upload.expires_at <= t).order_by(Upload.expires_at)
    for upload_id in list(session.scalars(due_uploads.limit(limit))):
        upload = session.scalar(
            select(Upload).where(Upload.id == upload_id, Upload.status == pending).with_for_update()
        )
        if upload is None:
            session.rollback()
            continue
        end_upload(session, upload, UploadStatus.EXPIRED, actor=audit.SYSTEM, action="upload.expire")
        session.commit()
        drop_parts(session, upload, reason="upload.expire", store=store)
        uploads += 1
    session.rollback()
    return ExpiryResult(files, uploads)
