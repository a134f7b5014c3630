"""One job end to end (validate → … → release) on the device ``GUARDTUNE_DEVICE`` names:
the CPU in every run, CUDA (bf16 weights and autocast, activation checkpointing, cached
reference) where there is one; every stage in token-budget batches
(``GUARDTUNE_MICRO_BATCH_TOKENS``)."""

from __future__ import annotations

import pytest

from tests.conftest import clear_caches
from tests.worker.conftest import create_job, demo_lines
from tests.worker.test_stages import run_all


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_job_runs_every_stage_on_the_configured_device(pipeline_env, monkeypatch, device):  # noqa: F811
    import torch

    from core.db import session_scope
    from core.models import Job, SafetyReport
    from worker.pipeline.resources import load_model

    monkeypatch.setenv("GUARDTUNE_DEVICE", device)
    monkeypatch.setenv("GUARDTUNE_MICRO_BATCH_TOKENS", "256")
    clear_caches()
    assert next(load_model(str(pipeline_env))[0].parameters()).device.type == device
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with session_scope() as session:
        job_id = create_job(
            session, "org-d", demo_lines(8), safety={"mode": "adaptive", "estimator": "probe", "reference": "cached"}
        )
    assert run_all(job_id) == ["validate", "scan", "train", "evaluate", "gate", "release"]
    with session_scope() as session:
        assert session.get(Job, job_id).status == "succeeded"
        training = session.get(SafetyReport, job_id).training
        assert training["reference"] == "cached"
        assert training["final_kl"] is not None
    if device == "cuda":
        assert torch.cuda.max_memory_allocated() > 0
