"""Offboarding an organization (``guardtune-ops orgs delete ORG --purge``).

In one transaction, under the organization's row lock: refused while it has active jobs;
otherwise its rows go (outbox messages, job events, checkpoints, safety reports with the
system prompts they quote, released models, webhook endpoints with their deliveries and log,
jobs, files, API keys, the organization) and
``org.purge`` is recorded with what went. The audit log stays: its records keep the
organization's ids. After the commit its released adapters are unloaded from the inference
backend, their copies placed on this host removed, and every object under
``orgs/<org id>/`` (uploads, scan and reference caches, checkpoints, evaluation outputs,
adapters) deleted, with retries, else by the deletion sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core import deletion, inference
from core.audit import service as audit
from core.db import matched_rows
from core.errors import Conflict, NotFound
from core.jobs.vocab import ACTIVE
from core.models import (
    ApiKey,
    Checkpoint,
    File,
    Job,
    JobEvent,
    Organization,
    OutboxMessage,
    ReleasedModel,
    SafetyReport,
    StageRun,
    Upload,
    UploadPart,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from core.orgs.repository import OrgRepository
from core.releases.repository import ReleaseRepository
from core.storage import ObjectStore, org_key

ACTION_PURGE = "org.purge"


@dataclass(frozen=True)
class PurgeResult:
    org_id: str
    name: str
    rows: dict[str, int]  # table -> rows deleted
    prefix: str
    objects_deleted: bool  # False: the store failed; the deletion sweep finishes


def purge_org(session: Session, ref: str, *, actor: str, store: ObjectStore | None = None) -> PurgeResult:
    """Delete the organization ``ref`` (id or name) with every row and stored object of
    its (see the module's docstring); commits ``session``."""
    found = OrgRepository(session).by_ref(ref)
    org = OrgRepository(session).get(found.id, for_update=True) if found else None
    if org is None:
        raise NotFound(f"no organization {ref!r}", code="org_not_found")
    active = session.scalar(select(func.count()).where(Job.org_id == org.id, Job.status.in_(ACTIVE))) or 0
    if active:
        raise Conflict(
            f"organization {org.id} has {active} unfinished job(s): cancel them first (guardtune-ops jobs list "
            f"--org {org.id})",
            code="org_has_active_jobs",
        )
    org_id, name = org.id, org.name  # the rows are gone after the commit: keep what is needed
    released = [(m.id, m.sha256) for m in session.scalars(select(ReleasedModel).where(ReleasedModel.org_id == org_id))]
    rows = _delete_rows(session, org_id)
    prefix = org_key(org_id) + "/"
    audit.record(
        session,
        actor=actor,
        action=ACTION_PURGE,
        target=org_id,
        details={"name": name, "rows": rows, "prefix": prefix, "released_models": [m for m, _ in released]},
    )
    session.commit()
    operator_view = ReleaseRepository.for_operator(session)
    for model_id, sha256 in released:
        inference.adapter_revoked(model_id)
        if not operator_view.digest_serving(sha256):
            inference.remove_placed_adapter(sha256)
    gone = deletion.delete_or_defer(session, prefix, prefix=True, reason=f"{ACTION_PURGE} {org_id}", store=store)
    return PurgeResult(org_id, name, rows, prefix, gone)


def _delete_rows(session: Session, org_id: str) -> dict[str, int]:
    """Every row of the organization, children first; rows deleted per table."""
    jobs = select(Job.id).where(Job.org_id == org_id).scalar_subquery()
    endpoints = select(WebhookEndpoint.id).where(WebhookEndpoint.org_id == org_id).scalar_subquery()
    statements = {
        "webhook_attempts": delete(WebhookAttempt).where(WebhookAttempt.endpoint_id.in_(endpoints)),
        "webhook_deliveries": delete(WebhookDelivery).where(WebhookDelivery.endpoint_id.in_(endpoints)),
        "webhook_endpoints": delete(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id),
        "outbox": delete(OutboxMessage).where(OutboxMessage.job_id.in_(jobs)),
        "job_events": delete(JobEvent).where(JobEvent.job_id.in_(jobs)),
        "checkpoints": delete(Checkpoint).where(Checkpoint.job_id.in_(jobs)),
        "safety_reports": delete(SafetyReport).where(SafetyReport.job_id.in_(jobs)),
        "stage_runs": delete(StageRun).where(StageRun.job_id.in_(jobs)),
        "released_models": delete(ReleasedModel).where(ReleasedModel.org_id == org_id),
        "jobs": delete(Job).where(Job.org_id == org_id),
        "upload_parts": delete(UploadPart).where(UploadPart.org_id == org_id),
        "uploads": delete(Upload).where(Upload.org_id == org_id),
        "files": delete(File).where(File.org_id == org_id),
        "api_keys": delete(ApiKey).where(ApiKey.org_id == org_id),
        "organizations": delete(Organization).where(Organization.id == org_id),
    }
    return {
        table: matched_rows(session, statement.execution_options(synchronize_session=False))
        for table, statement in statements.items()
    }
