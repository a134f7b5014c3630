"""Releasing, approving and revoking fine-tuned adapters (shared by the pipeline, ops and
the models API).

A released adapter is a :class:`~core.models.ReleasedModel` row naming where its PEFT
files lie in object storage and their digest (:mod:`core.releases.digests`). Every
function here writes its audit record in the caller's session, so the change and its
record commit together; the caller commits.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from core import deletion
from core.audit import service as audit
from core.errors import Conflict, InvalidRequest, NotFound
from core.inference import remove_placed_adapter
from core.jobs.transitions import transition
from core.jobs.vocab import ErrorCode, JobStatus
from core.models import Checkpoint, Job, ReleasedModel, SafetyReport, now
from core.releases.digests import ADAPTER_FILES, adapter_prefix, adapter_sha256, job_dir, model_id
from core.releases.repository import ReleaseRepository
from core.revocation import revoke
from core.storage import ObjectStore, get_store

# Audit actions written here.
ACTION_RELEASE = "model.release"
ACTION_APPROVE = "release.approve"
ACTION_REVOKE = "model.revoke"


def release_job(
    session: Session,
    job: Job,
    *,
    actor: str,
    reason: str | None = None,
    sha256: str,
    storage_prefix: str,
) -> ReleasedModel:
    """Create the job's :class:`ReleasedModel`, set ``job.fine_tuned_model`` and audit it.

    Idempotent for the pipeline: releasing a job already released with the same digest
    returns the existing row (no second record); a different digest is a conflict.
    """
    existing = ReleaseRepository(session, job.org_id).of_job(job.id)
    if existing is not None:
        if existing.sha256 != sha256:
            raise Conflict(f"job {job.id} was already released as {existing.id} with another adapter digest")
        job.fine_tuned_model = existing.id
        return existing
    released = ReleasedModel(
        id=model_id(job.model, job.org_id, job.suffix, job.id),
        job_id=job.id,
        org_id=job.org_id,
        base_model=job.model,
        storage_prefix=storage_prefix,
        sha256=sha256,
        created_at=now(),
    )
    session.add(released)
    job.fine_tuned_model = released.id
    session.flush()
    details = {
        "job_id": job.id,
        "org_id": job.org_id,
        "base_model": job.model,
        "sha256": sha256,
        "storage_prefix": storage_prefix,
    }
    if reason is not None:
        details["reason"] = reason
    audit.record(session, actor=actor, action=ACTION_RELEASE, target=released.id, details=details)
    return released


def _require_reason(reason: str | None) -> str:
    if reason is None or not reason.strip():
        raise InvalidRequest("a reason is required", param="reason")
    return reason.strip()


def approve_blocked_job(
    session: Session,
    job_id: str,
    *,
    actor: str,
    reason: str,
    store: ObjectStore | None = None,
) -> ReleasedModel:
    """Override the gate for a job blocked by it: release the adapter it already stored.

    The job must have ended ``failed`` with ``error.code == "safety_gate_blocked"`` and
    its adapter (``adapter_config.json`` + ``adapter_model.safetensors``) must be in the
    store, with the digest the gate recorded when it judged it (``gate.adapter_sha256``;
    decisions from before it was recorded name none). The job becomes ``succeeded`` with ``fine_tuned_model`` set; the override (who,
    why, the gate's original verdict) goes to the audit log, the job's events and the
    safety report's ``gate.override``.
    """
    reason = _require_reason(reason)
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"no job {job_id!r}", code="job_not_found")
    error = job.error or {}
    if job.status != JobStatus.FAILED or error.get("code") != ErrorCode.SAFETY_GATE_BLOCKED:
        raise Conflict(
            f"job {job_id} is {job.status}"
            + (f" ({error.get('code')})" if error.get("code") else "")
            + f"; only jobs failed with {ErrorCode.SAFETY_GATE_BLOCKED} can be approved",
            code="job_not_blocked",
        )
    store = store or get_store()
    prefix = adapter_prefix(job.org_id, job.id)
    missing = [name for name in ADAPTER_FILES if not store.exists(f"{prefix}/{name}")]
    if missing:
        raise NotFound(f"job {job_id} has no stored adapter (missing {', '.join(missing)})", code="adapter_not_found")
    digest = adapter_sha256(store, prefix)
    report = session.get(SafetyReport, job.id)
    judged = (report.gate or {}).get("adapter_sha256") if report is not None else None
    if judged is not None and judged != digest:
        raise Conflict(
            f"job {job_id}'s stored adapter (sha256 {digest[:12]}…) is not the one the safety gate judged "
            f"(sha256 {judged[:12]}…)",
            code="adapter_changed",
        )

    at = now()
    model = model_id(job.model, job.org_id, job.suffix, job.id)
    override = {"actor": actor, "reason": reason, "at": at, "blocked_error": error, "model": model}
    # The one move out of a terminal status: failed (gate-blocked) -> succeeded.
    transition(
        session,
        job.id,
        JobStatus.SUCCEEDED,
        allowed_from=(JobStatus.FAILED,),
        message=f"Release approved by {actor} overriding the safety gate: {reason}",
        level="warn",
        event_data={"override": override},
        actor=actor,
        action=ACTION_APPROVE,
        details={"reason": reason, "org_id": job.org_id, "gate_error": error},
        stage=None,
        error=None,
        finished_at=job.finished_at or at,
    )
    released = release_job(session, job, actor=actor, reason=reason, sha256=digest, storage_prefix=prefix)
    if report is not None:
        report.gate = {**(report.gate or {}), "override": override}
    session.flush()
    return released


def revoke_model(
    session: Session, model_id: str, *, actor: str, reason: str, keep_files: bool = False
) -> ReleasedModel:
    """Stop serving a released adapter and audit why. Unless ``keep_files`` (an operator's
    hold for an investigation), the rows of the job's checkpoints go in the same transaction
    and its stored objects after the commit (:func:`delete_model_files`)."""
    reason = _require_reason(reason)
    revoked = revoke(
        session,
        ReleasedModel,
        model_id,
        missing=NotFound(f"no released model {model_id!r}", code="model_not_found"),
        revoked=Conflict(f"model {model_id} was already revoked", code="model_revoked"),
        actor=actor,
        action=ACTION_REVOKE,
        details=lambda released: {
            "reason": reason,
            "job_id": released.job_id,
            "org_id": released.org_id,
            "files": "kept" if keep_files else "deleted",
        },
        revoke_reason=reason,
    )
    if not keep_files:
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == revoked.job_id))
    return revoked


def delete_model_files(session: Session, released: ReleasedModel, store: ObjectStore | None = None) -> bool:
    """After a revocation's commit: every stored object of the job that made the model
    (adapter, checkpoints, evaluation outputs, scan and reference caches; with retries, else
    left to the deletion sweep) and the adapter copies placed for serving on this host,
    unless a model still serving has the same digest. True when the objects went now."""
    gone = deletion.delete_or_defer(
        session,
        job_dir(released.org_id, released.job_id),
        prefix=True,
        reason=f"model.revoke {released.id}",
        store=store,
    )
    if not ReleaseRepository.for_operator(session).digest_serving(released.sha256):
        remove_placed_adapter(released.sha256)
    return gone
