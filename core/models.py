"""SQLAlchemy 2 models. Times are Unix seconds (the OpenAI wire format).

Public ids are prefixed random strings (``file-…``, ``ftjob-…``); tables that must
be read in insertion order (events, audit) also carry an integer ``seq``.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.jobs.vocab import JobStatus
from core.vocab import BaseModelStatus, FileStatus, KeyScope, UploadStatus


def now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    allowed_modes: Mapped[list[Any] | None] = mapped_column(JSON)  # None: GUARDTUNE_ALLOWED_MODES
    gpu_weight: Mapped[int | None] = mapped_column(Integer)  # share of the GPU workers (core.dispatch); None: 1


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16), default=KeyScope.CUSTOMER.value)  # a KeyScope
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger)

    org: Mapped[Organization] = relationship()


class File(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    storage_key: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default=FileStatus.UPLOADED.value)  # a FileStatus
    status_details: Mapped[str | None] = mapped_column(Text)
    n_examples: Mapped[int] = mapped_column(Integer, default=0)
    n_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    format: Mapped[str | None] = mapped_column(String(24))  # core.datasets.Format; None before 0010
    errors: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, index=True)  # expires_after; the expiry sweep
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)


class Upload(Base):
    """An upload in parts (OpenAI's Uploads API): ``bytes`` announced at creation, parts
    received while ``pending`` (until ``expires_at``), completed into the file ``file_id``
    or ``cancelled``/``expired`` (its parts' objects deleted). ``file_expires_after_s``: the
    file's ``expires_after.seconds``, if asked for."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.PENDING.value, index=True)  # an UploadStatus
    file_expires_after_s: Mapped[int | None] = mapped_column(Integer)
    file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class UploadPart(Base):
    """A part of an upload: its bytes are the object ``storage_key``."""

    __tablename__ = "upload_parts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("org_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True, default=time.time_ns)  # list order
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))  # the base model's registry id
    # ``model="ft:…"``: the released model whose adapter training starts from (``model`` is its base)
    parent_model: Mapped[str | None] = mapped_column(String(300))
    training_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    validation_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    status: Mapped[str] = mapped_column(String(24), default=JobStatus.VALIDATING_FILES.value, index=True)
    stage: Mapped[str | None] = mapped_column(String(24))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    method: Mapped[dict[str, Any]] = mapped_column(default=dict)
    safety: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    integrations: Mapped[list[Any] | None] = mapped_column(JSON)  # OpenAI's wire shape, as created
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(300))
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    result_files: Mapped[list[Any]] = mapped_column(default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(200))  # holder of the stage lease
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    # +1 on every UPDATE of the row, by whichever writer (ORM or Core ``update()``): the
    # validator of a conditional poll (``api.conditional``), read without the row.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", onupdate=text("version + 1"))


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")  # message | metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    storage_prefix: Mapped[str] = mapped_column(String(512))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class SafetyReport(Base):
    __tablename__ = "safety_reports"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    scan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    training: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now, onupdate=now)
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", onupdate=text("version + 1"))


class BaseModelEntry(Base):
    """A base model of the registry, and what onboarding cached for it."""

    __tablename__ = "base_models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(500))  # alias, HF id or local path
    status: Mapped[str] = mapped_column(String(16), default=BaseModelStatus.REGISTERED.value)  # a BaseModelStatus
    context_length: Mapped[int | None] = mapped_column(Integer)
    probe_prefix: Mapped[str | None] = mapped_column(String(512))
    baseline: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ReleasedModel(Base):
    """A fine-tuned adapter that passed the gate (or was approved) and may be served."""

    __tablename__ = "released_models"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # ft:<base>:<org>:<suffix>:<job>
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(200))
    storage_prefix: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    revoke_reason: Mapped[str | None] = mapped_column(Text)


class AuditRecord(Base):
    """Append-only, hash-chained. No code path updates or deletes a row."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(300), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class OutboxMessage(Base):
    """A pipeline task to send: written in the transaction that makes it due, sent after
    the commit (``sent_at``), consumed once by the worker that runs it (``consumed_at``).

    ``id`` is also the broker message (Celery task) id, so a replay of the same row is
    recognised as a duplicate. A job's newest row is its only live one: writing a new row
    marks the older unconsumed ones consumed. ``request_id``: the API request the task
    stems from (``x-request-id``), bound in the worker while the task runs. ``not_before``: a
    stage retried after a transient fault waits until then (the reaper sends it)."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    task: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float)
    sends: Mapped[int] = mapped_column(Integer, default=0)
    consumed_at: Mapped[float | None] = mapped_column(Float)
    request_id: Mapped[str | None] = mapped_column(String(128))
    not_before: Mapped[float | None] = mapped_column(Float)  # a delayed retry: sent by the reaper after this


class StageRun(Base):
    """A pipeline stage that ran to its end: its wall time and, for ``train``, the tokens it
    trained (the training file's estimated tokens × epochs, its share of the steps when it
    resumed from a checkpoint). The measured throughput that estimates read
    (:mod:`core.jobs.estimate`)."""

    __tablename__ = "stage_runs"
    __table_args__ = (Index("ix_stage_runs_stage_seq", "stage", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    stage: Mapped[str] = mapped_column(String(24))  # a core.jobs.pipeline.Stage
    seconds: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[float] = mapped_column(Float)


class PendingDeletion(Base):
    """A stored object, or every object under a prefix, whose deletion failed after its
    retries: the deletion sweep (:func:`core.deletion.sweep`) tries it again until it goes."""

    __tablename__ = "pending_deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(1024))
    prefix: Mapped[bool] = mapped_column(Boolean, default=False)  # every object under ``key``
    reason: Mapped[str] = mapped_column(String(300))  # what deleted it, e.g. "file.delete file-…"
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class WebhookEndpoint(Base):
    """An organization's webhook endpoint: job events are POSTed to ``url``, signed per Standard
    Webhooks with ``secret`` (``whsec_…``). The secret is stored as is: the worker needs it to
    sign (a symmetric HMAC key, so a hash will not do), and it is shown once, at creation."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class WebhookDelivery(Base):
    """One event to deliver to one endpoint: its signed body is ``payload`` (kept, so every
    attempt sends the same message under the same ``event_id``). ``status``: ``pending`` until
    an attempt gets a 2xx (``delivered``) or the attempts run out (``failed``);
    ``next_attempt_at``: when a pending delivery is due."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_job_status", "job_id", "status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class WebhookAttempt(Base):
    """The delivery log: one row per POST of a delivery (``status_code``: the receiver's
    answer, None when none came; ``error``: why the attempt did not count as delivered)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint_seq", "endpoint_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
