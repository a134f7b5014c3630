"""Stage ``release`` (light): record the adapter's digest, name the model
``ft:<base>:<org>:<suffix>:<job>`` and make it visible in ``/v1/models``."""

from __future__ import annotations

from core.audit import service as audit
from core.db import session_scope
from core.inference import adapter_ref, adapter_released
from core.jobs.vocab import JobStatus
from core.releases import service as releases
from core.releases.digests import adapter_sha256
from core.storage import get_store
from worker.pipeline import jobstate
from worker.pipeline.resources import adapter_prefix


def run(job_id: str) -> None:
    with session_scope() as session:
        job = jobstate.live_job(session, job_id)
        prefix = adapter_prefix(job)
        released = releases.release_job(
            session, job, actor=audit.SYSTEM, storage_prefix=prefix, sha256=adapter_sha256(get_store(), prefix)
        )
        jobstate.finish(
            session,
            job_id,
            JobStatus.SUCCEEDED,
            fine_tuned_model=released.id,
            message=f"Released as {released.id} (sha256 {released.sha256[:12]}…)",
        )
        adapter = adapter_ref(released)
    adapter_released(adapter)  # after the commit: the serving backend may load it now
