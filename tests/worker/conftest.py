"""Fixtures for pipeline tests: a tiny model registered as a base model, and a job
created directly in the database (the API tests cover creation over HTTP)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests.conftest import REPO

DEMO = REPO / "examples" / "demo_train.jsonl"


def small_pipeline_env(tiny_model: Path) -> dict[str, str]:
    """Settings that keep a whole job to seconds on a tiny model."""
    return {
        "GUARDTUNE_BASE_MODELS": json.dumps([f"tiny={tiny_model}"]),
        "GUARDTUNE_DEFAULT_BASE_MODEL": "tiny",
        "GUARDTUNE_EVAL_MAX_PROMPTS": "4",
        "GUARDTUNE_EVAL_MAX_BENIGN_PROMPTS": "3",
        "GUARDTUNE_EVAL_MAX_NEW_TOKENS": "4",
        "GUARDTUNE_EVAL_CONDITION_PROMPTS": "3",
        "GUARDTUNE_CHECKPOINT_EVERY": "2",
        "GUARDTUNE_PROBE_LAYERS": "1",
    }


def demo_lines(n: int) -> bytes:
    return b"".join(DEMO.read_bytes().splitlines(keepends=True)[:n])


def create_job(session, org_id: str, data: bytes, **job_fields) -> str:
    """An uploaded, validated training file and a job in ``validating_files``."""
    from core.ids import new_id
    from core.models import File, Job, Organization
    from core.storage import get_store, org_key

    if session.get(Organization, org_id) is None:
        session.add(Organization(id=org_id, name=org_id))
        session.flush()
    file_id = new_id("file")
    key = org_key(org_id, "files", file_id)
    put = get_store().put_stream(key, io.BytesIO(data))
    session.add(
        File(
            id=file_id,
            org_id=org_id,
            filename="train.jsonl",
            purpose="fine-tune",
            bytes=put.bytes,
            sha256=put.sha256,
            storage_key=key,
            status="processed",
        )
    )
    session.flush()
    job = Job(
        id=new_id("ftjob"),
        org_id=org_id,
        model=job_fields.pop("model", "tiny"),
        training_file_id=file_id,
        hyperparameters=job_fields.pop(
            "hyperparameters", {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1}
        ),
        safety=job_fields.pop("safety", {"mode": "adaptive", "estimator": "probe"}),
        seed=1,
        **job_fields,
    )
    session.add(job)
    session.flush()
    return job.id
