"""Fixtures for pipeline tests: a tiny model registered as a base model, a job created
directly in the database (the API tests cover creation over HTTP), and the whole stack
(``stack_env``, ``api`` under uvicorn, a Celery ``worker`` process, an SDK ``client``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from openai import OpenAI

from tests.conftest import REPO, apply_env, start_api, start_worker, stop_process

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
        # One thread in every process (as in this one: tests/safety/conftest.py): tests compare
        # greedy outputs across worker, inference server and test process, and a tiny random
        # model's near-ties follow the order of float sums.
        "GUARDTUNE_TORCH_THREADS": "1",
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


ADAPTER = {"adapter_config.json": b'{"r": 8, "peft_type": "LORA"}', "adapter_model.safetensors": b"\0" * 64}


def store_adapter(org_id: str, job_id: str, weights: bytes = ADAPTER["adapter_model.safetensors"]) -> str:
    """Put (fake) adapter files where the pipeline stores the job's adapter; their digest."""
    from core.releases.digests import adapter_prefix, adapter_sha256
    from core.storage import get_store

    prefix = adapter_prefix(org_id, job_id)
    for name, data in {**ADAPTER, "adapter_model.safetensors": weights}.items():
        get_store().put_stream(f"{prefix}/{name}", io.BytesIO(data))
    return adapter_sha256(get_store(), prefix)


@pytest.fixture
def pipeline_env(embedded_env, tiny_model, monkeypatch):
    """This process configured as the embedded stack with the tiny model registered (stages
    run in this process)."""
    from core import registry
    from core.db import session_scope
    from core.settings import get_settings
    from migrations import migrate

    apply_env(monkeypatch, {**embedded_env, **small_pipeline_env(tiny_model)})
    migrate.upgrade()
    with session_scope() as session:
        registry.seed_base_models(session, get_settings())
    return tiny_model


@pytest.fixture(scope="module")
def stack_env(deployment_env, tiny_model) -> dict[str, str]:
    return {
        **deployment_env,
        **small_pipeline_env(tiny_model),
        "GUARDTUNE_HEARTBEAT_INTERVAL_S": "1",
        "GUARDTUNE_STALE_JOB_AFTER_S": "4",
        "GUARDTUNE_VISIBILITY_TIMEOUT_S": "8",
        "GUARDTUNE_REAPER_INTERVAL_S": "3",
        "GUARDTUNE_MAX_CONCURRENT_JOBS_PER_ORG": "20",
    }


@pytest.fixture(scope="module")
def api(stack_env, tmp_path_factory):
    server = start_api(stack_env, tmp_path_factory.mktemp("e2e") / "api.log")
    yield server
    stop_process(server.process)


@pytest.fixture
def worker(stack_env, tmp_path):
    process = start_worker(stack_env, tmp_path / "worker.log")
    yield process
    stop_process(process)


@pytest.fixture
def client(api, make_key) -> OpenAI:
    _, _, key = make_key(f"e2e-{time.monotonic_ns()}")
    return OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
