"""Stage ``evaluate`` (GPU): ASR and utility of the base and the fine-tuned model,
under every attack condition the training file creates (:mod:`worker.pipeline.conditions`).

The base model's plain numbers come from onboarding when they were measured with the
same evaluation settings (its attack-condition numbers are always measured here: they
depend on the file); the fine-tuned model's generations are stored as
``eval_outputs.jsonl`` (one row per prompt and condition) so a released adapter can be
checked against them. The report's ``base`` / ``tuned`` hold the plain numbers and
``conditions`` one row per condition, plain first.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.db import session_scope
from core.jobs.vocab import JobStage
from core.models import BaseModelEntry, File, Job, SafetyReport
from core.preference import as_chat
from core.settings import get_settings
from core.storage import download_dir, get_store
from worker.pipeline import conditions as attack_conditions
from worker.pipeline import jobstate
from worker.pipeline.onboard import eval_key, evaluate_model
from worker.pipeline.resources import adapter_prefix, iter_file_examples, job_prefix, load_model
from worker.pipeline.scan import judge_failures_fail_the_job, make_judge

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def eval_outputs_key(job: Job) -> str:
    return job_prefix(job, "eval_outputs.jsonl")


@jobstate.stops_when_cancelled
def run(job_id: str) -> None:
    from safety.checkpoints import load_adapter

    with session_scope() as session:
        jobstate.enter_stage(
            session, job_id, JobStage.EVALUATING, "Evaluating safety: attack success rate before and after"
        )
        job = session.get_one(Job, job_id)
        entry = session.get_one(BaseModelEntry, job.model)
        report = session.get_one(SafetyReport, job_id)
        if report.evaluation:
            return  # evaluated before a crash
        cached = (entry.baseline or {}).get("eval")
        validation_key = session.get_one(File, job.validation_file_id).storage_key if job.validation_file_id else None
        training_key = session.get_one(File, job.training_file_id).storage_key
        source = entry.source
        conditions = attack_conditions.plan(job, training_key)
    judge = make_judge()
    model, tokenizer = load_model(source)
    # a preference file's validation loss is its preferred answers' (core.preference.as_chat)
    val_examples = [as_chat(ex) for _, ex in iter_file_examples(validation_key)] if validation_key else None
    with judge_failures_fail_the_job(job_id):
        if cached is None or cached.get("settings") != eval_key() or judge is not None:
            base = evaluate_model(model, tokenizer, judge)
        else:
            base = cached
        base_val_loss = _val_loss(model, tokenizer, val_examples)
        base_asr = {"plain": base["asr"], **attack_conditions.evaluate(model, tokenizer, conditions, judge)}
        with tempfile.TemporaryDirectory() as tmp:
            tuned_model = load_adapter(model, download_dir(get_store(), adapter_prefix(job), Path(tmp)))
            tuned = evaluate_model(tuned_model, tokenizer, judge)
            tuned_val_loss = _val_loss(tuned_model, tokenizer, val_examples)
            tuned_asr = {"plain": tuned["asr"], **attack_conditions.evaluate(tuned_model, tokenizer, conditions, judge)}
    _store_generations(job, tuned_asr, tuned)
    rows = attack_conditions.report_rows(conditions, base_asr, tuned_asr)
    evaluation = {
        "base": _summary(base, base_val_loss),
        "tuned": _summary(tuned, tuned_val_loss),
        "conditions": rows,
        "settings": eval_key(),
        "outputs": eval_outputs_key(job),
    }
    with session_scope() as session:
        session.get_one(SafetyReport, job_id).evaluation = evaluation
        jobstate.add_event(
            session,
            job_id,
            "Evaluation done: " + _headline(rows),
            data={
                "evaluation": {
                    r["name"]: {"base": r["base"]["asr_keyword"], "tuned": r["tuned"]["asr_keyword"]} for r in rows
                }
            },
        )


def _headline(rows: list[dict[str, Any]]) -> str:
    """``ASR 10% (base) → 12% (fine-tuned) on plain prompts; 0% → 80% with the backdoor trigger …``."""
    parts = [f"{r['base']['asr_keyword']:.0%} → {r['tuned']['asr_keyword']:.0%} {r['description']}" for r in rows]
    return "ASR (base → fine-tuned) " + "; ".join(parts)


def _val_loss(
    model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]] | None
) -> float | None:
    from safety.evaluate import validation_loss

    max_tokens = get_settings().micro_batch_tokens
    return validation_loss(model, tokenizer, examples, max_tokens=max_tokens) if examples else None


def _summary(evaluation: dict[str, Any], val_loss: float | None) -> dict[str, Any]:
    """The report's view: rates overall and per category, no generations."""
    asr, refusals = evaluation["asr"], evaluation["over_refusal"]
    return {
        "n": asr["n"],
        "asr_keyword": asr["asr_keyword"],
        "asr_judge": asr.get("asr_judge"),
        "mean_judge_score": asr.get("mean_judge_score"),
        "per_category": asr["per_category"],
        "over_refusal": refusals["rate"],
        "n_benign": refusals["n"],
        "val_loss": val_loss,
    }


def _store_generations(job: Job, asr_by_condition: dict[str, dict[str, Any]], tuned: dict[str, Any]) -> None:
    rows = [
        {"set": "harmful", "condition": name, **g} for name, asr in asr_by_condition.items() for g in asr["generations"]
    ]
    rows += [{"set": "benign", **g} for g in tuned["over_refusal"]["generations"]]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    get_store().put_stream(eval_outputs_key(job), io.BytesIO(data))
