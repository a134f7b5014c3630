"""Where a job's artifacts live in the object store, and loading what stages need:
training examples, the base model, the base model's probe, the adapter a continued job
starts from; the token limit of an example."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.datasets import iter_examples
from core.db import session_scope
from core.jobs.memory_plan import GIB, ModelShape, example_tokens, micro_batch_tokens_that_fit, worker_layout
from core.jobs.vocab import ErrorCode
from core.models import Job, ReleasedModel
from core.releases import digests
from core.settings import get_settings
from core.storage import ObjectStore, download_dir, get_store, org_key
from worker.pipeline.jobstate import StageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def job_prefix(job: Job, *parts: str) -> str:
    return org_key(job.org_id, "jobs", job.id, *parts)


def scan_key(job: Job) -> str:
    return job_prefix(job, "scan.jsonl")


def reference_key(job: Job) -> str:
    """The cached reference top-k log-probs of the job's training data (``safety.reference``)."""
    return job_prefix(job, "reference_topk.safetensors.gz")


def adapter_prefix(job: Job) -> str:
    return digests.adapter_prefix(job.org_id, job.id)


def checkpoint_prefix(job: Job, step: int) -> str:
    return job_prefix(job, "checkpoints", f"step-{step:06d}")


def download_parent_adapter(job: Job, dest: Path) -> Path | None:
    """The adapter of the released model ``job`` continues training from (``Job.parent_model``),
    downloaded into ``dest`` and checked against the digest it was released with; ``None`` for
    a job that starts from a fresh adapter. A parent revoked since the job was created, or whose
    stored files no longer have that digest, fails the job ``parent_model_unavailable``."""
    if job.parent_model is None:
        return None
    with session_scope() as session:
        parent = session.get(ReleasedModel, job.parent_model)
        usable = parent is not None and parent.revoked_at is None and parent.org_id == job.org_id
        prefix, sha256 = (parent.storage_prefix, parent.sha256) if parent is not None else ("", "")
    dest.mkdir(parents=True, exist_ok=True)
    if usable:
        download_dir(get_store(), prefix, dest)
    if not usable or not any(dest.iterdir()) or digests.dir_sha256(dest) != sha256:
        raise StageError(
            ErrorCode.PARENT_MODEL_UNAVAILABLE,
            f"The model {job.parent_model} this job continues from was revoked or its adapter changed "
            "after the job was created.",
            param="model",
        )
    return dest


def probe_prefix(model_id: str) -> str:
    return f"models/{model_id.replace('/', '--')}/probe"


@contextmanager
def work_dir(job_id: str) -> Iterator[Path]:
    """The job's scratch folder on this worker's disk, empty (a killed worker's leftovers are
    removed first) and removed when the block ends, however it ends; one per rank of a
    data-parallel run (``safety.distributed``), whose ranks share the disk."""
    from safety.distributed import world

    rank = world().rank
    path = get_settings().home_dir / "work" / (job_id if rank == 0 else f"{job_id}-rank{rank}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def iter_file_examples(storage_key: str, store: ObjectStore | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, example)`` of an uploaded JSONL file, streamed from the store."""
    return iter_examples((store or get_store()).iter_chunks(storage_key))


def read_scan_risks(job: Job) -> tuple[list[float], list[bool]]:
    """Per-example risks and whether the scan flagged each, in file order, from the scan artifact."""
    lines = b"".join(get_store().iter_chunks(scan_key(job))).decode().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [row["risk"] for row in rows], [bool(row["flagged"]) for row in rows]


def token_limit(model: PreTrainedModel) -> int:
    """The most tokens an example may have: the model's context, capped by
    ``GUARDTUNE_MAX_EXAMPLE_TOKENS``. The scan fails a job with a longer example (naming its
    line), so training (and the reference cache) never truncates one."""
    from safety.base_models import context_length

    return min(context_length(model), get_settings().max_example_tokens)


def micro_batch_tokens(model: PreTrainedModel, method: str, *, exact_reference: bool) -> int | None:
    """The padded tokens of training's micro-batches: ``GUARDTUNE_MICRO_BATCH_TOKENS``; unset,
    with ``GUARDTUNE_WORKER_GPU_MEMORY_GB`` the most that ``core.jobs.memory_plan`` fits in it
    for examples of ``method`` at the token limit (at least one such example; a DPO pair is
    both its sequences); else ``None`` (the job's batch size alone)."""
    settings = get_settings()
    if settings.micro_batch_tokens is not None or settings.worker_gpu_memory_gb is None:
        return settings.micro_batch_tokens
    shape = ModelShape.from_config(model.config.to_dict(), model.num_parameters())
    layout = worker_layout(settings, exact_reference=exact_reference)
    longest = example_tokens(token_limit(model), method)
    return micro_batch_tokens_that_fit(shape, layout, int(settings.worker_gpu_memory_gb * GIB), longest) or longest


def load_model(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (eval mode, on ``GUARDTUNE_DEVICE``) and its tokenizer: fp32 weights on
    CPU, half precision on CUDA, NF4 with ``GUARDTUNE_QUANTIZE=4bit`` (``safety.memory``).
    A rank of a data-parallel run loads it on its own GPU. Applies ``GUARDTUNE_TORCH_THREADS`` first: every stage that runs a model, the inference
    server and the ``guardtune-ops`` model commands (``ops.modelload``) load it here."""
    from safety.base_models import load_base_model, set_torch_threads
    from safety.distributed import rank_device
    from safety.memory import device_weight_dtype, quantization_config

    settings = get_settings()
    set_torch_threads(settings.torch_threads)
    return load_base_model(
        source,
        cache_dir=settings.models_dir,
        dtype=device_weight_dtype(settings.device),
        quantization=quantization_config(settings.quantize, settings.device),
        device=rank_device(settings.device),
    )
