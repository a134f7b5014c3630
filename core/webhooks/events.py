"""A finished job's webhook event, and queuing it for the organization's endpoints.

The event has OpenAI's shape (the ``openai`` SDK's ``FineTuningJob{Succeeded,Failed,
Cancelled}WebhookEvent``): ``{"id": "evt_…", "object": "event", "created_at", "type":
"fine_tuning.job.<status>", "data": {"id": <job id>}}``, with guardtune's gate verdict in
``data.safety`` (:func:`safety_verdict`). A job the gate blocked is ``failed``, as the API
reports it (``error.code: safety_gate_blocked``); an operator's approval of it (``failed`` →
``succeeded``) sends ``fine_tuning.job.succeeded``.

:func:`job_ended` is called by :func:`core.jobs.transitions.transition` in the transaction
that moves a job to a terminal status: one delivery row per endpoint of the job's
organization, and one outbox row for the delivery task, sent after that transaction commits
(:func:`core.outbox.send_after_commit`).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import outbox
from core.ids import new_id
from core.jobs.pipeline import DEFAULT_QUEUE, WEBHOOK_TASK
from core.jobs.vocab import JobStatus
from core.models import Job, SafetyReport, WebhookDelivery, WebhookEndpoint

EVENT_TYPES = {
    JobStatus.SUCCEEDED: "fine_tuning.job.succeeded",
    JobStatus.FAILED: "fine_tuning.job.failed",
    JobStatus.CANCELLED: "fine_tuning.job.cancelled",
}


def safety_verdict(job: Job, report: SafetyReport | None) -> dict[str, Any]:
    """``data.safety``: the gate's ``decision`` (``released``, ``blocked``, ``approved`` (an
    operator released a blocked job) or None when the gate did not run), its ``reasons``,
    the plain-prompt ``asr`` of base and fine-tuned model (``keyword``, ``judge``; None where not
    measured) and the job's ``error_code`` (None unless it failed)."""
    gate = (report.gate if report else None) or {}
    evaluation = (report.evaluation if report else None) or {}
    decision = None
    if gate:
        released = gate.get("released")
        decision = "released" if released else ("approved" if job.status == JobStatus.SUCCEEDED else "blocked")
    asr = {
        side: {"keyword": evaluation[key].get("asr_keyword"), "judge": evaluation[key].get("asr_judge")}
        for side, key in (("base", "base"), ("fine_tuned", "tuned"))
        if isinstance(evaluation.get(key), dict)
    }
    return {
        "decision": decision,
        "reasons": gate.get("reasons", []),
        "asr": asr or None,
        "error_code": (job.error or {}).get("code"),
    }


def event(job: Job, report: SafetyReport | None) -> dict[str, Any]:
    """The webhook event of the finished ``job``."""
    return {
        "id": new_id("evt", sep="_"),
        "object": "event",
        "created_at": int(time.time()),
        "type": EVENT_TYPES[JobStatus(job.status)],
        "data": {"id": job.id, "safety": safety_verdict(job, report)},
    }


def job_ended(session: Session, job_id: str) -> None:
    """Queue the finished job's event for every endpoint of its organization (nothing when it
    has none), in ``session``'s transaction; the delivery task is sent after its commit."""
    job = session.get_one(Job, job_id)  # (transition() expired a loaded one: read as moved)
    endpoints = session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.org_id == job.org_id)).all()
    if not endpoints:
        return
    body = event(job, session.get(SafetyReport, job_id))
    stamp = time.time()
    for endpoint_id in endpoints:
        session.add(
            WebhookDelivery(
                id=new_id("whdel"),
                endpoint_id=endpoint_id,
                job_id=job_id,
                event_id=body["id"],
                event_type=body["type"],
                payload=body,
                status="pending",
                attempts=0,
                next_attempt_at=stamp,
            )
        )
    session.flush()
    outbox.send_after_commit(session, outbox.add(session, job_id, WEBHOOK_TASK, DEFAULT_QUEUE))
