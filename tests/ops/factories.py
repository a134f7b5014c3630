"""Rows the pipeline would have written, built directly for the ops tests."""

from __future__ import annotations

from pathlib import Path

from core.audit import service as audit
from core.db import session_scope
from core.ids import new_id
from core.models import File, Job, JobEvent, SafetyReport
from core.releases.digests import adapter_prefix
from core.storage import get_store, upload_dir

BLOCKED_ERROR = {
    "code": "safety_gate_blocked",
    "param": None,
    "message": "ASR rose from 2.0% to 40.0% (allowed: +5 points)",
}


def make_job(
    org_id: str,
    *,
    status: str = "failed",
    error: dict | None = BLOCKED_ERROR,
    adapter: Path | None = None,
    suffix: str = "demo",
) -> str:
    """A finished job as the pipeline leaves it (events, safety report, gate audit record);
    with ``adapter``, its final adapter stored where the pipeline stores it."""
    with session_scope() as session:
        file = File(
            id=new_id("file"),
            org_id=org_id,
            filename="train.jsonl",
            purpose="fine-tune",
            storage_key=f"orgs/{org_id}/files/x",
            status="processed",
        )
        session.add(file)
        session.flush()
        job = Job(
            id=new_id("ftjob"),
            org_id=org_id,
            model="smollm2-135m-instruct",
            training_file_id=file.id,
            status=status,
            stage=None,
            error=error,
            suffix=suffix,
            method={"type": "supervised"},
            safety={"mode": "adaptive", "estimator": "probe"},
        )
        session.add(job)
        session.flush()
        for i, message in enumerate(["Validating training file", "Scanning 40 examples", "Training started"]):
            session.add(JobEvent(id=new_id("ftevent"), job_id=job.id, message=message, created_at=1_700_000_000 + i))
        session.add(
            JobEvent(
                id=new_id("ftevent"),
                job_id=job.id,
                type="metrics",
                message="step 10",
                data={"step": 10, "loss": 1.25, "w_kl": 0.9, "risk": 4.5},
            )
        )
        session.add(
            SafetyReport(
                job_id=job.id,
                scan={"n_examples": 40, "flagged": 6, "by_score": {"1": 30, "5": 6}},
                training={"mean_risk": 2.1, "regularized_share": 0.3, "final_kl": 0.02},
                evaluation={"base": {"asr_keyword": 0.02}, "fine_tuned": {"asr_keyword": 0.4}},
                gate={"released": status == "succeeded", "reasons": [BLOCKED_ERROR["message"]]},
            )
        )
        if error and error.get("code") == "safety_gate_blocked":
            audit.record(
                session,
                actor=audit.SYSTEM,
                action="gate.decision",
                target=job.id,
                details={"released": False, "reasons": [error["message"]]},
            )
        job_id = job.id
    if adapter is not None:
        upload_dir(get_store(), adapter, adapter_prefix(org_id, job_id))
    return job_id
