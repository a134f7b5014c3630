"""The product's release gate applied to a replication run: would guardtune have released
this fine-tune of the reference? The same :func:`safety.gate.decide` and operator policy
(``GUARDTUNE_GATE_*`` settings) as the worker's gate stage, on the conditions the run
measured (plain, and the attack's own: AOA template, backdoor trigger)."""

from __future__ import annotations

from typing import Any

from safety.gate import ConditionAsr, EvalSummary, decide
from worker.pipeline.gate import policy


def summary(ev: dict[str, Any], conditions: list[str]) -> EvalSummary:
    """The gate's view of one ``measure`` result, limited to ``conditions``."""
    asr = {name: ev["asr"][name] for name in conditions}
    plain = asr.get("plain", {})
    return EvalSummary(
        asr_keyword=plain.get("asr_keyword"),
        asr_judge=plain.get("asr_judge"),
        over_refusal=ev["over_refusal"],
        conditions=tuple(
            ConditionAsr(name, f"under the {name} condition", v["asr_keyword"], v.get("asr_judge"))
            for name, v in asr.items()
            if name != "plain"
        ),
    )


def decision(reference: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """``{"released": bool, "reasons": [...]}`` for a run's evaluation against the reference's."""
    conditions = list(run["asr"])
    decided = decide(summary(reference, conditions), summary(run, conditions), policy())
    return {"released": decided.released, "reasons": decided.reasons}
