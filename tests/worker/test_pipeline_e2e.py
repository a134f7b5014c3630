"""Whole jobs through the real stack: the API under uvicorn, Postgres, Redis, the S3
server and Celery worker processes, driven with the official ``openai`` SDK, on a
tiny model. Released, blocked, cancelled, and surviving a SIGKILLed worker."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time

import httpx
import pytest
from openai import OpenAI

from core.storage import org_key
from tests.conftest import start_api, start_worker, stop_process
from tests.worker.jobs import all_events, finished, stored_jsonl, upload, wait_for

pytestmark = pytest.mark.slow  # whole jobs on real API and worker processes


def metric_steps(client: OpenAI, job_id: str) -> list[int]:
    return [e.data["step"] for e in all_events(client, job_id) if e.type == "metrics"]


def test_job_succeeds_and_released_adapter_reproduces_outputs(client, worker, api, stack_env, tmp_path, tiny_model):
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(client),
        suffix="e2e",
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        seed=3,
    )
    job = finished(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny:{job.organization_id}:e2e:{job.id}"
    assert job.fine_tuned_model in {m.id for m in client.models.list().data}
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    report = httpx.get(
        f"{api.base_url}/v1/fine_tuning/jobs/{job.id}/safety_report",
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert report["gate"]["released"] is True
    assert report["scan"]["n"] == 16

    # The released adapter: PEFT format, loads on the base model, reproduces the eval outputs.
    from peft import PeftModel

    from safety.base_models import load_base_model, set_torch_threads
    from safety.evaluate import evaluate_asr
    from safety.prompt_sets import load_builtin

    set_torch_threads(1)  # the worker's arithmetic (small_pipeline_env)

    raw = httpx.get(
        f"{api.base_url}/v1/models/{job.fine_tuned_model}/adapter",
        headers={"Authorization": f"Bearer {client.api_key}"},
        timeout=60,
    )
    assert raw.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(raw.content)) as tar:
        tar.extractall(tmp_path / "adapter", filter="data")
    adapter_dir = next(p.parent for p in (tmp_path / "adapter").rglob("adapter_config.json"))
    assert (adapter_dir / "adapter_model.safetensors").exists()
    base, tokenizer = load_base_model(str(tiny_model), cache_dir=tmp_path)
    tuned = PeftModel.from_pretrained(base, adapter_dir).eval()
    asr = evaluate_asr(tuned, tokenizer, load_builtin("harmful_eval")[:4], max_new_tokens=4)
    stored = stored_jsonl(stack_env, org_key(job.organization_id, "jobs", job.id, "eval_outputs.jsonl"))
    assert [g.response for g in asr.generations] == [r["response"] for r in stored if r.get("condition") == "plain"]


def test_job_blocked_by_the_gate(stack_env, make_key, tmp_path):
    env = {**stack_env, "GUARDTUNE_GATE_MAX_ASR": "0.0"}  # a random tiny model never refuses
    server = start_api(env, tmp_path / "api.log")
    process = start_worker(env, tmp_path / "worker.log")
    try:
        _, _, key = make_key("e2e-blocked")
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=upload(client, 8), hyperparameters={"n_epochs": 1}
        )
        job = finished(client, job.id)
        assert job.status == "failed"
        assert job.error.code == "safety_gate_blocked"
        assert "ASR" in job.error.message
        assert job.fine_tuned_model is None
        assert not [m for m in client.models.list().data if m.id.startswith("ft:")]
        assert any("blocked" in e.message for e in all_events(client, job.id))
        [result] = job.result_files  # the step metrics of a blocked job too
        assert client.files.retrieve(result).purpose == "fine-tune-results"
        assert client.files.content(result).read().startswith(b"step,train_loss,train_accuracy,")
    finally:
        stop_process(process)
        stop_process(server.process)


EPOCHS = 5  # × 12 steps of 4 examples


def long_job(client: OpenAI) -> str:
    """Many quick steps on the tiny model: time to cancel or kill in the middle."""
    return client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, 48), hyperparameters={"n_epochs": EPOCHS, "batch_size": 4}
    ).id


def test_cancel_stops_training_within_a_step(client, worker):
    job_id = long_job(client)
    wait_for(lambda: len(metric_steps(client, job_id)) >= 3, 180, "training steps")
    assert client.fine_tuning.jobs.cancel(job_id).status == "cancelled"
    after = max(metric_steps(client, job_id))  # read once the cancel has committed
    assert client.fine_tuning.jobs.cancel(job_id).status == "cancelled"  # idempotent
    stop = wait_for(
        lambda: next((e for e in all_events(client, job_id) if "Training stopped" in e.message), None),
        60,
        "training to stop",
    )
    stopped_at = int(stop.message.split("step ")[1].split()[0])
    assert stopped_at <= after + 1  # at most the step in flight when we read
    time.sleep(2)
    assert max(metric_steps(client, job_id)) == stopped_at  # and nothing after
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "cancelled"
    assert job.fine_tuned_model is None
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id).data]
    assert steps
    assert max(steps) <= stopped_at


def test_killed_worker_resumes_from_checkpoint(client, stack_env, tmp_path):
    first = start_worker(stack_env, tmp_path / "worker1.log")
    try:
        job_id = long_job(client)
        ckpts = lambda: [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id).data]  # noqa: E731
        wait_for(lambda: ckpts() and max(ckpts()) >= 4, 180, "a checkpoint")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool process, mid-training
        first.wait()
        killed_at = max(metric_steps(client, job_id))
    finally:
        stop_process(first)
    assert client.fine_tuning.jobs.retrieve(job_id).status == "running"
    second = start_worker(stack_env, tmp_path / "worker2.log")
    try:
        job = finished(client, job_id, timeout_s=300)
    finally:
        stop_process(second)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in all_events(client, job_id)]
    resumed = [m for m in messages if m.startswith("Resumed training from the checkpoint at step")]
    assert resumed, messages
    resumed_step = int(resumed[0].rsplit(" ", 1)[1])
    assert 4 <= resumed_step <= killed_at
    steps = metric_steps(client, job_id)
    assert steps[-1] == 12 * EPOCHS  # 48 examples / 4 per step: every step was trained
    assert set(steps) == set(range(1, steps[-1] + 1))
