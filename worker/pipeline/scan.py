"""Stage ``scan`` (GPU): score every trained assistant turn of every training example for
risk once, before training (``safety.scan``: an example's risk is its riskiest turn's).

A DPO job's preference pairs are checked as their two chat examples and scanned by
``safety.pair_scan`` (both outputs in context; one row per pair, its ``turn`` 1 when the
preferred output gave the risk, 2 when the non-preferred one did).

When the job's KL uses the cached reference (``worker.pipeline.reference``), the scan runs
the base model once over every whole example, encoded as training encodes it, and that one
forward gives both the probe's features (of each trained turn's prompt, which the example
starts with) and the reference's top-k log-probs of every answer token
(``safety.scan_reference``); the cache is stored beside ``scan.jsonl``, before it.

The probe's probability becomes risk by ``GUARDTUNE_PROBE_RISK`` (``safety.scan.ScanConfig``:
``binary`` by default; ``graded`` moves only the training weights at the default flag
threshold). Per-example risks go to ``scan.jsonl`` in the store (``ScanResult.rows``: one
JSON line per example, file order, with the ``line``, the ``turn`` that gave the risk, its
probe probability, judge score, risk and flag); the summary, whose
``top_flagged`` lists line and turn of each, goes to the safety report. A job fails when its
flagged share exceeds its ``safety.max_flagged_fraction`` (the stricter of the customer's and
the operator's ``GUARDTUNE_MAX_FLAGGED_FRACTION``); it keeps its scan report and event, so
the customer can see which lines were flagged.

Before scoring, every example of the training and validation files is rendered with the base
model's chat template as training renders it, its ``tools`` and tool calls included, and its
token count is checked against the token limit (the model's context capped by
``GUARDTUNE_MAX_EXAMPLE_TOKENS``, the length training uses): a line the template cannot render
faithfully (it fails, or renders the tools or tool calls as if absent) or a longer example
fails the job ``invalid_training_file`` with one ``line N: …`` error per example, as the file
validation reports its errors, before any GPU time is spent on training.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from core.datasets import Issue
from core.db import session_scope
from core.jobs.config import SafetyConfig
from core.jobs.vocab import ErrorCode, JobStage
from core.logging import get_logger
from core.models import BaseModelEntry, File, Job, SafetyReport
from core.preference import is_preference, job_method, pair_chats
from core.settings import get_settings
from core.storage import get_store
from worker.pipeline import jobstate, transient
from worker.pipeline.jobstate import StageError
from worker.pipeline.onboard import ensure_probe
from worker.pipeline.reference import store_cache, uses_cache
from worker.pipeline.resources import iter_file_examples, load_model, scan_key, token_limit

log = get_logger(__name__)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from safety.judge import Judge
    from safety.scan import ScanResult, ScanSummary


def make_judge() -> Judge | None:
    """The Safety Critic judge of this deployment (endpoint or local model), or None."""
    from safety.judge import judge_from_settings

    return judge_from_settings(get_settings())


@contextmanager
def judge_failures_fail_the_job(job_id: str) -> Iterator[None]:
    """Turn a judge outage into the job's ``judge_unavailable`` error (never a made-up score).
    The customer sees the kind of failure (``HTTP 401``) and the request id; the log keeps the
    judge's answer."""
    from safety.judge import JudgeUnavailableError

    try:
        yield
    except JudgeUnavailableError as exc:
        log.warning("judge_unavailable", error=str(exc)[:500])
        raise StageError(
            ErrorCode.JUDGE_UNAVAILABLE,
            f"The Safety Critic judge failed ({exc.kind}), so no risk or ASR was invented. "
            f"Quote {transient.reference(job_id)} to support.",
            "safety.estimator",
        ) from exc


def check_examples(
    examples: list[tuple[int, dict[str, Any]]],
    tokenizer: PreTrainedTokenizerBase,
    limit: int,
    max_errors: int,
    param: str = "training_file",
) -> None:
    """Fail the job ``invalid_training_file`` naming each line the base model cannot train
    on: one its chat template cannot render faithfully, tools and tool calls included
    (:func:`safety.templates.check_renders`, then encoded as training encodes it), or one
    longer than ``limit`` tokens (the first ``max_errors`` of each kind shown, all counted)."""
    from safety.data import encode_example, to_messages
    from safety.templates import TemplateError, check_renders, example_tools, render

    unrenderable, too_long = [], []
    for line, example in examples:
        messages, tools = to_messages(example), example_tools(example)
        try:
            check_renders(tokenizer, messages, tools)
            encode_example(tokenizer, example, limit)
        except TemplateError as exc:
            unrenderable.append(Issue(line, str(exc)))
            continue
        text = render(tokenizer, messages, tools, add_generation_prompt=False)
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n_tokens > limit:
            too_long.append(Issue(line, f"the example has {n_tokens} tokens, over the limit of {limit}"))
    what = "training file" if param == "training_file" else "validation file"
    if unrenderable:
        message = f"The base model cannot train on these lines of the {what}: {_listed(unrenderable, max_errors)}."
        raise StageError(ErrorCode.INVALID_TRAINING_FILE, message, param)
    if too_long:
        limit_is = f"{limit} tokens (the model's context, capped by GUARDTUNE_MAX_EXAMPLE_TOKENS)"
        message = f"Examples exceed the token limit of {limit_is}: {_listed(too_long, max_errors)}."
        raise StageError(ErrorCode.INVALID_TRAINING_FILE, message, param)


def chats(examples: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """The chat examples of a file's ``(line, example)`` items: a preference pair's two
    (``core.preference.pair_chats``), each with the pair's line; other lines as they are."""
    return [
        (line, chat)
        for line, example in examples
        for chat in (pair_chats(example) if is_preference(example) else (example,))
    ]


def _listed(issues: list[Issue], max_errors: int) -> str:
    more = f"; and {len(issues) - max_errors} more" if len(issues) > max_errors else ""
    return "; ".join(map(str, issues[:max_errors])) + more


@jobstate.stops_when_cancelled
def run(job_id: str) -> None:
    from safety.pair_scan import scan_pairs
    from safety.scan import ScanConfig, scan_dataset

    settings = get_settings()
    with session_scope() as session:
        jobstate.enter_stage(session, job_id, JobStage.SCANNING, "Scanning the training data for risk")
        job = session.get_one(Job, job_id)
        report = session.get(SafetyReport, job_id)
        if report is not None and report.scan and get_store().exists(scan_key(job)):
            return  # scanned before a crash
        session.commit()  # unlock the job row: the heartbeat writes it while the model loads and a probe trains
        file = session.get_one(File, job.training_file_id)
        entry = session.get_one(BaseModelEntry, job.model)
        examples = list(iter_file_examples(file.storage_key))
        model, tokenizer = load_model(entry.source)
        check_examples(chats(examples), tokenizer, token_limit(model), settings.validation_max_errors)
        if job.validation_file_id is not None:
            valid = list(iter_file_examples(session.get_one(File, job.validation_file_id).storage_key))
            check_examples(
                chats(valid), tokenizer, token_limit(model), settings.validation_max_errors, "validation_file"
            )
        safety = SafetyConfig.stored(job.safety, settings)
        estimator = safety.estimator
        judge = make_judge() if safety.uses_judge else None
        if safety.uses_judge and judge is None:
            raise StageError(
                ErrorCode.JUDGE_UNAVAILABLE,
                "This deployment has no judge configured (neither "
                "GUARDTUNE_JUDGE_BASE_URL nor GUARDTUNE_JUDGE_LOCAL_MODEL); use estimator 'probe'.",
                "safety.estimator",
            )
        probe = ensure_probe(session, entry, model, tokenizer) if safety.uses_probe else None
        session.commit()  # keep a freshly trained probe even if scanning fails
        scan = scan_pairs if job_method(job.method) == "dpo" else scan_dataset
        with judge_failures_fail_the_job(job_id):
            result = scan(
                examples,
                probe=probe,
                judge=judge,
                estimator=estimator,
                model=model,
                tokenizer=tokenizer,
                config=ScanConfig(
                    flag_threshold=settings.flag_threshold,
                    probe_risk=settings.probe_risk,
                    context_drop=settings.context_refusal_drop,
                ),
                progress=lambda n: jobstate.beat(job_id),
                reference_topk=settings.reference_topk if uses_cache(job) else None,
                max_len=token_limit(model),
                max_tokens=settings.micro_batch_tokens,
            )
        if result.reference is not None:
            store_cache(job, result.reference)
        _store_scan(session, job, result)
        summary = result.summary
        jobstate.add_event(
            session,
            job_id,
            f"Scanned {summary.n} examples: {summary.n_flagged} flagged (mean risk {summary.mean_risk:.2f})",
            data={"scan": _headline(summary)},
        )
        bound = safety.max_flagged_fraction
        if bound is not None and summary.flagged_fraction > bound:
            session.commit()  # the refused job keeps its scan report and event: which lines, which risks
            lines = ", ".join(f"{e.line} (turn {e.turn})" for e in summary.top_flagged)
            raise StageError(
                ErrorCode.UNSAFE_TRAINING_FILE,
                f"{summary.flagged_fraction:.0%} of the training examples were flagged as harmful, above "
                f"this job's limit of {bound:.0%}. Flagged lines include: {lines}.",
                "training_file",
            )


def _store_scan(session: Session, job: Job, result: ScanResult) -> None:
    rows = "".join(json.dumps(row) + "\n" for row in result.rows()).encode()
    get_store().put_stream(scan_key(job), io.BytesIO(rows))
    report = session.get(SafetyReport, job.id) or SafetyReport(job_id=job.id)
    report.scan = {
        **result.summary.to_dict(),
        "estimator": SafetyConfig.stored(job.safety).estimator,
        "artifact": scan_key(job),
    }
    session.add(report)


def _headline(summary: ScanSummary) -> dict[str, Any]:
    return {
        "n": summary.n,
        "n_flagged": summary.n_flagged,
        "mean_risk": summary.mean_risk,
        "counts_by_score": {str(k): v for k, v in summary.counts_by_score.items()},
    }
