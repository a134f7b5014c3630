"""Stage ``gate`` (light): the operator's release policy decides, on the worst attack
condition of the evaluation (:func:`safety.gate.decide`); every decision is audited.
The decision records the digest of the adapter it judged (``gate.adapter_sha256``): the
release stage and an operator's approval release only that adapter. Blocked jobs end
``failed`` with ``safety_gate_blocked``; the adapter stays stored and is never served (ops
may approve it with a recorded reason). Either way the
job gets its ``step_metrics.csv`` result file here, and the job's experiment trackers the
scan, evaluation and gate summaries (``worker.pipeline.tracking``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.audit import service as audit
from core.db import session_scope
from core.jobs.vocab import ErrorCode, JobStage, JobStatus
from core.models import SafetyReport
from core.releases.digests import adapter_sha256
from core.settings import get_settings
from core.storage import get_store
from worker.metrics import GATE_DECISIONS
from worker.pipeline import jobstate, results
from worker.pipeline.resources import adapter_prefix
from worker.pipeline.tracking import open_tracking

if TYPE_CHECKING:
    from safety.gate import GatePolicy


def policy() -> GatePolicy:
    from safety.gate import GatePolicy

    s = get_settings()
    return GatePolicy(
        max_asr_increase=s.gate_max_asr_increase,
        max_asr_absolute=s.gate_max_asr,
        max_over_refusal_increase=s.gate_max_over_refusal_increase,
        use=s.gate_asr_source,
    )


def run(job_id: str) -> None:
    from safety.gate import decide, summaries_from_evaluation

    decided: bool | None = None  # released, when this run made the decision
    with session_scope() as session:
        jobstate.enter_stage(session, job_id, JobStage.GATING, "Applying the release gate")
        report = session.get_one(SafetyReport, job_id)
        if report.gate is None:
            assert report.evaluation is not None  # stored by the evaluate stage
            decision = decide(*summaries_from_evaluation(report.evaluation), policy())
            digest = adapter_sha256(get_store(), adapter_prefix(jobstate.live_job(session, job_id)))
            report.gate = {**decision.to_dict(), "policy": vars(policy()), "adapter_sha256": digest}
            decided = decision.released
            audit.record(
                session,
                actor=audit.SYSTEM,
                action="gate.decision",
                target=job_id,
                details={"released": decision.released, "reasons": decision.reasons, "adapter_sha256": digest},
            )
            jobstate.add_event(
                session,
                job_id,
                "Gate: " + " ".join(decision.reasons),
                level="info" if decision.released else "warn",
                data={"gate": report.gate},
            )
        job = jobstate.live_job(session, job_id)
        summary = {"scan": report.scan, "evaluation": report.evaluation, "gate": report.gate}
        results.attach_step_metrics(session, job)
        if not report.gate["released"]:
            jobstate.finish(
                session,
                job_id,
                JobStatus.FAILED,
                level="error",
                error={
                    "code": ErrorCode.SAFETY_GATE_BLOCKED,
                    "param": None,
                    "message": "The fine-tuned model failed the safety gate: " + " ".join(report.gate["reasons"]),
                },
                message="Job blocked by the safety gate; the adapter is kept but not served",
            )
    if decided is not None:  # counted once committed: a decision rolled back is made again on the retry
        GATE_DECISIONS.labels("released" if decided else "blocked").inc()
    tracking = open_tracking(job)  # after the commit: a tracker never holds up or undoes the decision
    tracking.log_summary(summary)
    tracking.close(finished=True)
