"""Base-model onboarding: train the activation probe on the project's prompt sets and
measure the base model's ASR and over-refusal once, cached for every later job."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from core.audit import service as audit
from core.db import session_scope
from core.errors import NotFound
from core.jobs.memory_plan import ModelShape
from core.models import BaseModelEntry
from core.settings import get_settings
from core.storage import download_dir, get_store, upload_dir
from core.vocab import BaseModelStatus
from worker.pipeline.resources import load_model, probe_prefix

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from safety.judge import Judge
    from safety.probe import Probe
    from safety.prompt_sets import Prompt


def train_builtin_probe(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[Probe, dict[str, Any]]:
    """A probe trained only on the project's own prompt sets by the one recipe
    (``safety.probe_recipe``, layers per ``GUARDTUNE_PROBE_LAYERS``, weighting threshold
    per ``GUARDTUNE_PROBE_TARGET_RECALL``) with its answer-side head attached; returns
    (probe, report): layers chosen on one split, thresholds calibrated on a second, quality
    measured on a third; the head's report under ``answer_head``."""
    from safety.probe_recipe import train_recipe_answer_head, train_recipe_probe

    settings = get_settings()
    probe, report = train_recipe_probe(
        model, tokenizer, settings.probe_layers, target_recall=settings.probe_target_recall
    )
    head = train_recipe_answer_head(
        model, tokenizer, probe, settings.probe_layers, target_recall=settings.probe_target_recall
    )
    return probe, {**report.to_dict(), "answer_head": head.to_dict()}


def probe_summary(report: dict[str, Any]) -> str:
    """One honest line on a probe report: unseen-split AUROC, FPR/TPR at the reporting
    threshold and, for a probe calibrated with one, recall and false flags at the weighting
    threshold."""
    line = (
        f"probe layers {report['layers'][0]}-{report['layers'][-1]}: AUROC {report['auroc']:.3f} and, at threshold "
        f"{report['threshold']:.3f}, FPR {report['fpr_at_threshold']:.1%} / TPR {report['tpr_at_threshold']:.1%} on "
        f"{report['n_test']} held-out prompts that chose neither the layers nor the threshold (calibrated for FPR "
        f"<= {report['target_fpr']:.0%} on {report['n_calibrate']} others: FPR {report['calibrate_fpr']:.1%}; "
        f"layer-selection AUROC {report['select_auroc']:.3f}, optimistic)"
    )
    if "weight_threshold" not in report:  # a probe calibrated before the weighting threshold
        return line
    line = (
        f"{line}; weighting threshold {report['weight_threshold']:.3f} (recall >= {report['target_recall']:.0%} "
        f"on the calibration prompts): recall {report['weight_recall']:.1%}, false flags {report['weight_fpr']:.1%} "
        "on the held-out ones"
    )
    head = report.get("answer_head")
    if head is None:  # a probe trained before the answer-side head
        return line
    return (
        f"{line}; answer-side head: AUROC {head['auroc']:.3f}, at threshold {head['threshold']:.3f} "
        f"TPR {head['tpr_at_threshold']:.1%} / FPR {head['fpr_at_threshold']:.1%} on {head['n_test']} held-out answers"
    )


def ensure_probe(
    session: Session, entry: BaseModelEntry, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Probe:
    """The base model's probe: from the store if onboarded, else trained now and stored."""
    from safety.probe import Probe

    store = get_store()
    with tempfile.TemporaryDirectory() as tmp:
        if entry.probe_prefix and store.list(entry.probe_prefix):
            return Probe.load(download_dir(store, entry.probe_prefix, Path(tmp)))
        probe, report = train_builtin_probe(model, tokenizer)
        probe.save(Path(tmp) / "probe")
        upload_dir(store, Path(tmp) / "probe", probe_prefix(entry.id))
    entry.probe_prefix = probe_prefix(entry.id)
    entry.baseline = {**(entry.baseline or {}), "probe": report}
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="model.probe_trained",
        target=entry.id,
        details={
            "auroc": report["auroc"],
            "fpr_at_threshold": report["fpr_at_threshold"],
            "threshold": report["threshold"],
            "weight_threshold": report["weight_threshold"],
            "weight_recall": report["weight_recall"],
            "weight_fpr": report["weight_fpr"],
            "layers": report["layers"],
        },
    )
    return probe


def eval_prompts_source() -> str:
    """Which harmful eval set is in use: ``builtin:harmful_eval``, or the sha256 of the
    operator's ``GUARDTUNE_EVAL_PROMPTS_FILE`` (so a cached baseline follows the file)."""
    path = get_settings().eval_prompts_file
    if path is None:
        return "builtin:harmful_eval"
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def eval_prompts() -> list[Prompt]:
    """The harmful eval prompts: the operator's private file when set, else the shipped set."""
    from safety.prompt_sets import load_builtin, load_prompt_file

    path = get_settings().eval_prompts_file
    prompts = load_prompt_file(path, label="harmful") if path is not None else load_builtin("harmful_eval")
    if not prompts:
        raise ValueError(f"GUARDTUNE_EVAL_PROMPTS_FILE {path} holds no prompts")
    return prompts


def eval_key() -> dict[str, Any]:
    """The evaluation settings a cached baseline must match to be reused."""
    s = get_settings()
    return {
        "max_new_tokens": s.eval_max_new_tokens,
        "n_harmful": s.eval_max_prompts,
        "n_benign": s.eval_max_benign_prompts,
        "prompts": eval_prompts_source(),
    }


def evaluate_model(
    model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, judge: Judge | None = None
) -> dict[str, Any]:
    """ASR on the harmful eval set (:func:`eval_prompts`) and over-refusal on the
    built-in benign one."""
    from safety.evaluate import evaluate_asr, over_refusal
    from safety.prompt_sets import load_builtin

    s = get_settings()
    asr = evaluate_asr(
        model,
        tokenizer,
        eval_prompts()[: s.eval_max_prompts],
        judge=judge,
        max_new_tokens=s.eval_max_new_tokens,
        batch_size=s.eval_batch_size,
        max_tokens=s.micro_batch_tokens,
    )
    refusals = over_refusal(
        model,
        tokenizer,
        load_builtin("benign_eval")[: s.eval_max_benign_prompts],
        max_new_tokens=s.eval_max_new_tokens,
        batch_size=s.eval_batch_size,
        max_tokens=s.micro_batch_tokens,
    )
    return {"asr": asr.to_dict(), "over_refusal": refusals.to_dict(), "settings": eval_key()}


def onboard_base_model(model_id: str, actor: str = audit.SYSTEM) -> dict[str, Any]:
    """Train and store the probe, measure the baseline, mark the model ``ready``."""
    from safety.base_models import context_length

    with session_scope() as session:
        entry = session.get(BaseModelEntry, model_id)
        if entry is None:
            raise NotFound(f"No base model named {model_id!r} in the registry.", code="model_not_found")
        model, tokenizer = load_model(entry.source)
        entry.probe_prefix = None  # onboarding retrains
        ensure_probe(session, entry, model, tokenizer)
        shape = ModelShape.from_config(model.config.to_dict(), model.num_parameters()).to_dict()
        entry.baseline = {**(entry.baseline or {}), "eval": evaluate_model(model, tokenizer), "shape": shape}
        entry.context_length = context_length(model)
        entry.status = BaseModelStatus.READY
        audit.record(
            session,
            actor=actor,
            action="model.onboarded",
            target=model_id,
            details={"asr_keyword": entry.baseline["eval"]["asr"]["asr_keyword"]},
        )
        return onboarding_summary(entry)


def onboarding_summary(entry: BaseModelEntry) -> dict[str, Any]:
    """What onboarding reports of an onboarded registry row: status, context length, the probe's
    report (and its one-line summary) and the baseline's headline (ASR, over-refusal)."""
    assert entry.baseline is not None  # onboarded: the probe's report and the evaluation
    return {
        "model": entry.id,
        "status": entry.status,
        "context_length": entry.context_length,
        "probe": entry.baseline["probe"],
        "probe_summary": probe_summary(entry.baseline["probe"]),
        "baseline": _headline(entry.baseline["eval"]),
    }


def _headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {
        "asr_keyword": evaluation["asr"]["asr_keyword"],
        "asr_judge": evaluation["asr"].get("asr_judge"),
        "over_refusal": evaluation["over_refusal"]["rate"],
    }
