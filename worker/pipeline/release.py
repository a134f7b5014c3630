"""Stage ``release`` (light): only what the gate approved is released.

The job's gate decision (``SafetyReport.gate``) must say ``released`` and name the digest of
the adapter it judged, and the stored adapter must still have that digest; then the adapter
is named ``ft:<base>:<org>:<suffix>:<job>`` and made visible in ``/v1/models``. Otherwise the
release is refused: the job ends ``failed`` with ``release_refused`` and the refusal is
audited (``release.refused``). (An operator's approval of a gate-blocked job releases through
``guardtune-ops release approve``, :func:`core.releases.service.approve_blocked_job`, not
through this stage.)"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.audit import service as audit
from core.db import session_scope
from core.inference import adapter_ref, adapter_released
from core.jobs.vocab import ErrorCode, JobStatus
from core.models import SafetyReport
from core.releases import service as releases
from core.releases.digests import adapter_sha256
from core.storage import get_store
from worker.pipeline import jobstate
from worker.pipeline.resources import adapter_prefix


def run(job_id: str) -> None:
    with session_scope() as session:
        job = jobstate.live_job(session, job_id)
        prefix = adapter_prefix(job)
        sha256 = adapter_sha256(get_store(), prefix)
        refusal = refusal_reason(session.get(SafetyReport, job_id), sha256)
        if refusal is not None:
            _refuse(session, job_id, refusal, sha256)
            return
        released = releases.release_job(session, job, actor=audit.SYSTEM, storage_prefix=prefix, sha256=sha256)
        jobstate.finish(
            session,
            job_id,
            JobStatus.SUCCEEDED,
            fine_tuned_model=released.id,
            message=f"Released as {released.id} (sha256 {released.sha256[:12]}…)",
        )
        adapter = adapter_ref(released)
    adapter_released(adapter)  # after the commit: the serving backend may load it now


def refusal_reason(report: SafetyReport | None, sha256: str) -> str | None:
    """Why the adapter with digest ``sha256`` may not be released (None: it may)."""
    gate = report.gate if report is not None else None
    if not gate:
        return "the safety gate has not decided on this job"
    if gate.get("released") is not True:
        return "the safety gate did not approve this adapter"
    if gate.get("adapter_sha256") != sha256:
        return "the stored adapter is not the one the safety gate approved"
    return None


def _refuse(session: Session, job_id: str, reason: str, sha256: str) -> None:
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="release.refused",
        target=job_id,
        details={"reason": reason, "sha256": sha256},
    )
    jobstate.finish(
        session,
        job_id,
        JobStatus.FAILED,
        level="error",
        error={"code": ErrorCode.RELEASE_REFUSED, "param": None, "message": f"The release was refused: {reason}."},
        message=f"Release refused: {reason}",
    )
