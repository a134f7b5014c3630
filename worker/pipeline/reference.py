"""The job's cached reference distribution (``safety.reference``): computed once in the scan
stage from the base model (in the probe's forward, ``safety.scan_reference``), stored beside
``scan.jsonl`` as a job artifact, read by training.

A job uses it when its ``safety.reference`` (default ``GUARDTUNE_REFERENCE``) is ``cached``
and its mode regularizes (not ``none``). Training of a job scanned without it (e.g. before an
upgrade) builds and stores it first, so the artifact always exists once training starts.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from core.jobs.config import SafetyConfig
from core.jobs.vocab import ReferenceMode
from core.models import Job
from core.preference import job_method
from core.settings import get_settings
from core.storage import get_store
from worker.pipeline import jobstate
from worker.pipeline.resources import reference_key, token_limit

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from safety.reference import ReferenceCache


def uses_cache(job: Job) -> bool:
    """Whether training of ``job`` takes its KL against the cached reference. Jobs get their
    ``safety.reference`` at creation (``GUARDTUNE_REFERENCE`` by default); one created before
    the option existed keeps the exact reference it started with."""
    safety = SafetyConfig.stored(job.safety)
    dpo = job_method(job.method) == "dpo"  # DPO needs whole answers' reference log-probs: never cached
    return safety.regularized and safety.reference == ReferenceMode.CACHED and not dpo


def store_cache(job: Job, cache: ReferenceCache) -> None:
    """Store ``cache`` as the job's artifact."""
    get_store().put_stream(reference_key(job), io.BytesIO(cache.to_bytes()))


def build_and_store(
    job: Job, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]]
) -> ReferenceCache:
    """Run the reference (``model``, the base model) once over every example, keep the top
    ``GUARDTUNE_REFERENCE_TOPK`` log-probs of each answer token and store them."""
    from safety.data import encode_example
    from safety.reference import compute_reference_cache

    max_len = token_limit(model)
    encoded = [encode_example(tokenizer, example, max_len) for example in examples]
    settings = get_settings()
    cache = compute_reference_cache(
        model,
        encoded,
        tokenizer.pad_token_id,
        settings.reference_topk,
        progress=lambda n: jobstate.beat(job.id),
        max_tokens=settings.micro_batch_tokens,
    )
    store_cache(job, cache)
    return cache


def load_or_build(
    job: Job, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]]
) -> ReferenceCache:
    """The stored cache of ``job``, built (from the base ``model``) and stored if missing."""
    from safety.reference import ReferenceCache

    store = get_store()
    if store.exists(reference_key(job)):
        return ReferenceCache.from_bytes(b"".join(store.iter_chunks(reference_key(job))))
    return build_and_store(job, model, tokenizer, examples)
