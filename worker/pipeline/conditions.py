"""Attack conditions of a job's evaluation: planned from its training file and the
scan's flags (``scan.jsonl``, never re-scanned), asked of base and fine-tuned model,
and laid out for the safety report.

Cost is bounded by settings: at most ``GUARDTUNE_EVAL_SYSTEM_PROMPTS`` +
``GUARDTUNE_EVAL_TRIGGERS`` attack conditions, each asking
``GUARDTUNE_EVAL_CONDITION_PROMPTS`` harmful prompts (spread over the eval set) of
each model, on top of the plain evaluation.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from core.models import Job
from core.preference import as_chat
from core.settings import get_settings
from core.storage import get_store
from worker.pipeline.resources import iter_file_examples, scan_key

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from safety.attacks import Condition
    from safety.judge import Judge


def flagged_lines(job: Job) -> set[int]:
    """Training-file lines the scan flagged (any row of the line, should the scan list turns)."""
    rows = b"".join(get_store().iter_chunks(scan_key(job))).decode().splitlines()
    return {row["line"] for row in map(json.loads, filter(str.strip, rows)) if row.get("flagged")}


def plan(job: Job, training_key: str) -> list[Condition]:
    """The conditions for ``job``: plain, then system-prompt and trigger conditions."""
    from safety.attacks import TriggerConfig, plan_conditions

    s = get_settings()
    flagged = flagged_lines(job)
    config = TriggerConfig(min_share=s.trigger_min_share, min_ratio=s.trigger_min_ratio, top_k=s.eval_triggers)
    scanned = ((as_chat(example), line in flagged) for line, example in iter_file_examples(training_key))
    return plan_conditions(scanned, system_prompts=s.eval_system_prompts, triggers=config)


def evaluate(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    conditions: list[Condition],
    judge: Judge | None = None,
) -> dict[str, dict[str, Any]]:
    """ASR report dicts by condition name for the non-plain ``conditions``."""
    from safety.attacks import spread
    from safety.evaluate import evaluate_asr
    from worker.pipeline.onboard import eval_prompts

    s = get_settings()
    prompts = spread(eval_prompts(), s.eval_condition_prompts)
    return {
        c.name: evaluate_asr(
            model,
            tokenizer,
            prompts,
            judge=judge,
            max_new_tokens=s.eval_max_new_tokens,
            batch_size=s.eval_batch_size,
            condition=c,
            max_tokens=s.micro_batch_tokens,
        ).to_dict()
        for c in conditions
        if c.kind != "plain"
    }


def _rates(asr: dict[str, Any]) -> dict[str, Any]:
    return {k: asr.get(k) for k in ("n", "asr_keyword", "asr_judge", "mean_judge_score", "per_category")}


def report_rows(
    conditions: list[Condition], base: dict[str, dict[str, Any]], tuned: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One safety-report row per condition: what it is, and both models' rates.
    ``base`` / ``tuned`` map condition names (``"plain"`` included) to ASR report dicts."""
    return [{**c.to_dict(), "base": _rates(base[c.name]), "tuned": _rates(tuned[c.name])} for c in conditions]
