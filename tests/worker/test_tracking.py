"""Experiment tracking (``worker.pipeline.tracking``): the train stage's step metrics and the gate
stage's scan, evaluation and gate summaries reach the job's W&B integration (W&B's offline mode,
read back from its run files) and the operator's MLflow server (a local file store); a tracker
that fails, at opening or mid-run, is logged and dropped and never fails the job."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import structlog
from sqlalchemy import select

from safety.train_metrics import StepMetrics
from tests.conftest import clear_caches
from tests.worker.conftest import create_job, demo_lines, store_adapter

WANDB = {"project": "support-bot", "name": "first-run", "entity": None, "tags": ["v1"]}
SCAN = {"n": 4, "n_flagged": 1, "counts_by_score": {"1": 3, "5": 1}}
EVALUATION = {"base": {"asr_keyword": 0.25, "over_refusal": 0.0}, "tuned": {"asr_keyword": 0.25, "over_refusal": 0.0}}


def _step(step: int) -> StepMetrics:
    return StepMetrics(step, 2, 1, 2.0 / step, 1.5, 0.01 * step, 0.5, 0.5, 3.0, 0.9, 0.1, 10, 1.0, 1e-4)


def wandb_records(home: Path) -> list[tuple[str, object]]:
    """``(kind, record)`` of every offline W&B run under ``home``, in write order: W&B's run
    file is a LevelDB-style log of protobuf ``Record``s (a 7-byte file header, then 32 KiB
    blocks of chunks, each with a 7-byte header: CRC, little-endian length, type)."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for path in sorted((home / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")):
        data, records, pending = path.read_bytes(), [], b""
        position = 7
        while position + 7 <= len(data):
            if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
                position += 32768 - position % 32768
                continue
            length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
            chunk = data[position + 7 : position + 7 + length]
            position += 7 + length
            if kind == 0 and length == 0:
                continue
            pending += chunk
            if kind in (1, 4):  # a whole record, or a record's last chunk
                records.append(pending)
                pending = b""
        for raw in records:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            out.append((kind, getattr(record, kind)))
    return out


def _items(items) -> dict[str, object]:
    return {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in items}


@pytest.fixture
def tracked(pipeline_env, monkeypatch, tmp_path):
    """W&B offline and an MLflow file store configured; the store's URI."""
    store = tmp_path / "mlruns"
    monkeypatch.setenv("GUARDTUNE_WANDB_MODE", "offline")
    monkeypatch.setenv("GUARDTUNE_MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    clear_caches()
    return store.as_uri()


def _job_in_training(org_id: str) -> str:
    from core.db import session_scope

    with session_scope() as session:
        return create_job(
            session,
            org_id,
            demo_lines(4),
            status="running",
            stage="training",
            integrations=[{"type": "wandb", "wandb": WANDB}],
        )


def _train_two_steps(job_id: str) -> None:
    from core.db import session_scope
    from core.models import Job
    from worker.pipeline.tracking import open_tracking
    from worker.pipeline.train import Progress

    with session_scope() as session:
        job = session.get_one(Job, job_id)
    progress = Progress(job, open_tracking(job))
    for step in (1, 2):
        progress.on_step(_step(step))
    progress.tracking.close()


def _gate(job_id: str) -> None:
    from core.db import session_scope
    from core.models import Job, SafetyReport
    from worker.tasks import run_stage

    with session_scope() as session:
        job = session.get_one(Job, job_id)
        job.stage = "evaluating"
        session.add(SafetyReport(job_id=job_id, scan=SCAN, evaluation=EVALUATION))
    store_adapter(job.org_id, job_id)
    assert run_stage("gate", job_id) == "release"


def test_step_metrics_and_summaries_reach_wandb_and_mlflow(tracked):
    from mlflow.tracking import MlflowClient

    from core.settings import get_settings
    from worker.pipeline.tracking import JOB_TAG

    job_id = _job_in_training("org-tracked")
    _train_two_steps(job_id)
    _gate(job_id)

    records = wandb_records(get_settings().home_dir)
    runs = [record for kind, record in records if kind == "run"]
    assert {(run.run_id, run.project, run.display_name, tuple(run.tags)) for run in runs} == {
        (job_id, "support-bot", "first-run", ("v1",))
    }
    assert len(runs) == 2  # the train stage's and the gate stage's part of the one run
    history = [_items(record.item) for kind, record in records if kind == "history"]
    assert [(row["_step"], row["train_loss"], row["kl"]) for row in history] == [(1, 2.0, 0.01), (2, 1.0, 0.02)]
    assert all(row["kl_weight_flagged"] == 0.9 for row in history)
    summary: dict[str, object] = {}
    for kind, record in records:
        if kind == "summary":
            summary.update(_items(record.update))
    assert summary["scan"] == SCAN
    assert summary["evaluation"] == EVALUATION
    assert summary["gate"]["released"] is True

    client = MlflowClient(tracking_uri=tracked)
    [run] = client.search_runs(
        [client.get_experiment_by_name("guardtune").experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'"
    )
    assert run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")] == [(1, 2.0), (2, 1.0)]
    assert run.data.metrics["scan.n_flagged"] == 1
    assert run.data.metrics["evaluation.tuned.asr_keyword"] == 0.25
    assert run.data.params["model"] == "tiny"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"scan_summary.json", "evaluation_summary.json", "gate_summary.json"}
    assert json.loads(Path(client.download_artifacts(run.info.run_id, "scan_summary.json")).read_text()) == SCAN


def test_a_failing_tracker_is_logged_and_dropped_and_the_job_goes_on(tracked, monkeypatch, tmp_path):
    """MLflow that cannot open (its store a path under a file) and MLflow that fails mid-run (its
    store replaced by a file after the first step): W&B and the job carry on, the failures logged."""
    from core.db import session_scope
    from core.models import Job, JobEvent
    from core.settings import get_settings
    from worker.pipeline.tracking import open_tracking
    from worker.pipeline.train import Progress

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv("GUARDTUNE_MLFLOW_TRACKING_URI", (blocker / "mlruns").as_uri())
    clear_caches()
    job_id = _job_in_training("org-tracker-fails")
    with structlog.testing.capture_logs() as logs:
        _train_two_steps(job_id)
    assert [(e["tracker"], e["call"]) for e in logs if e["event"] == "tracker_failed"] == [("mlflow", "open")]

    monkeypatch.setenv("GUARDTUNE_MLFLOW_TRACKING_URI", tracked)
    clear_caches()
    with session_scope() as session:
        job = session.get_one(Job, job_id)
    progress = Progress(job, open_tracking(job))
    assert [tracker.name for tracker in progress.tracking.trackers] == ["wandb", "mlflow"]
    with structlog.testing.capture_logs() as logs:
        progress.on_step(_step(1))
        Path(tracked.removeprefix("file://")).rename(tmp_path / "moved")
        Path(tracked.removeprefix("file://")).write_text("gone")
        progress.on_step(_step(2))
        progress.tracking.close()
    assert [(e["tracker"], e["call"]) for e in logs if e["event"] == "tracker_failed"] == [("mlflow", "log_step")]
    assert [tracker.name for tracker in progress.tracking.trackers] == ["wandb"]
    with session_scope() as session:
        assert session.get_one(Job, job_id).status == "running"
        steps = session.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics"))
        assert [data["step"] for data in steps] == [1, 2, 1, 2]
    history = [_items(r.item) for kind, r in wandb_records(get_settings().home_dir) if kind == "history"]
    assert [row["_step"] for row in history] == [1, 2, 1, 2]  # W&B got every step of both stages


def test_the_wandb_base_url_reaches_the_runs_settings(tracked, monkeypatch):
    """``GUARDTUNE_WANDB_BASE_URL`` (a self-hosted W&B server) is the run's ``base_url``."""
    from core.db import session_scope
    from core.models import Job
    from worker.pipeline.tracking import WandbTracker, open_tracking

    server = "http://wandb.internal.example:8080"
    monkeypatch.setenv("GUARDTUNE_WANDB_BASE_URL", server)
    clear_caches()
    job_id = _job_in_training("org-tracked-server")
    with session_scope() as session:
        tracking = open_tracking(session.get_one(Job, job_id))
    try:
        [wandb_tracker] = [tracker for tracker in tracking.trackers if isinstance(tracker, WandbTracker)]
        assert wandb_tracker.run.settings.base_url == server
    finally:
        tracking.close()
