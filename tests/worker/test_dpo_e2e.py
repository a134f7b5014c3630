"""A DPO job end to end through the official ``openai`` SDK on the real stack (uvicorn,
Postgres, Redis, S3, a Celery worker process; ``tests/worker/conftest.py``), on the tiny
model: preference pairs scanned, trained, evaluated and gated, with DPO's metrics."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.worker.conftest import DEMO
from tests.worker.jobs import all_events, finished

pytestmark = pytest.mark.slow  # a whole job on real API and worker processes

REFUSAL = "I cannot help with that."


def pairs(first: int, n: int) -> bytes:
    """Demo lines ``first`` … as preference pairs: the demo's answer preferred to a refusal."""
    lines = DEMO.read_text().splitlines()[first : first + n]
    rows = []
    for line in lines:
        messages = json.loads(line)["messages"]
        rows.append(
            {
                "input": {"messages": messages[:-1]},
                "preferred_output": [messages[-1]],
                "non_preferred_output": [{"role": "assistant", "content": REFUSAL}],
            }
        )
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_a_dpo_job_runs_to_a_gate_decision_with_preference_metrics(client, worker, api):
    training = client.files.create(file=("prefs.jsonl", pairs(0, 8)), purpose="fine-tune")
    valid = client.files.create(file=("valid.jsonl", pairs(30, 3)), purpose="fine-tune")
    assert (training.status, valid.status) == ("processed", "processed")
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=training.id,
        validation_file=valid.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.2}}},
        seed=7,
    )
    job = finished(client, job.id, timeout_s=600)  # the probe is trained first: minutes on busy cores
    assert job.status == "succeeded" or job.error.code == "safety_gate_blocked", job.error
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2

    data = [e.data for e in all_events(client, job.id) if e.type == "metrics"]
    assert [d["step"] for d in data] == [1, 2]
    assert all(d["train_loss"] > 0 and 0 <= d["train_reward_accuracy"] <= 1 for d in data)
    assert data[0]["train_reward_margin"] == pytest.approx(0.0, abs=1e-3)  # the adapter starts as the identity
    assert data[-1]["valid_loss"] > 0 and 0 <= data[-1]["valid_reward_accuracy"] <= 1
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [2]

    report = httpx.get(
        f"{api.base_url}/v1/fine_tuning/jobs/{job.id}/safety_report",
        headers={"Authorization": f"Bearer {client.api_key}"},
    ).json()
    assert report["scan"]["n"] == 8  # one verdict per pair
    assert report["training"]["method"] == "dpo" and report["training"]["beta"] == 0.2
    assert report["evaluation"]["tuned"] and report["gate"]["released"] == (job.status == "succeeded")
