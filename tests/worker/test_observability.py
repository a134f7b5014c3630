"""Observability of the pipeline, run in this process on the embedded stack: the metrics a
stage moves, scraped as text from the worker's real ``/metrics`` (``worker.metrics.serve``)
and the API's (``GET /metrics``); the stage runs it records and the estimates read from them;
the Grafana dashboard's metric names against what the code exports."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from tests.conftest import REPO, apply_env, clear_caches, free_port, metric_value, start_worker, stop_process
from tests.worker.conftest import create_job, demo_lines, store_adapter
from tests.worker.jobs import wait_for

DASHBOARD = REPO / "monitoring" / "grafana-dashboard.json"
STAGES = ("validate", "scan", "train", "evaluate", "gate", "release")

Scrape = Callable[[], tuple[str, str]]


@pytest.fixture
def scrape(pipeline_env) -> Iterator[Scrape]:
    """``scrape()``: ``(worker text, API text)``, the worker's metrics server on a free port
    and the API app's ``GET /metrics``, both of this process."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from worker.metrics import serve

    port = free_port()
    server = serve(port)
    with TestClient(create_app()) as api:

        def _scrape() -> tuple[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                worker = answer.read().decode()
            response = api.get("/metrics")
            assert response.status_code == 200
            return worker, response.text

        yield _scrape
    server.shutdown()


def record_runs(job_id: str, runs: dict[str, list[tuple[float, int | None]]]) -> None:
    from core.db import session_scope
    from core.models import StageRun

    with session_scope() as session:
        for stage, measured in runs.items():
            for seconds, tokens in measured:
                session.add(
                    StageRun(job_id=job_id, stage=stage, seconds=seconds, tokens=tokens, finished_at=time.time())
                )


def test_a_stage_moves_the_worker_and_api_metrics_and_is_recorded(scrape):
    from core import outbox
    from core.db import session_scope
    from core.jobs.pipeline import DEFAULT_QUEUE, START_TASK
    from core.models import StageRun
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(session, "org-metrics", demo_lines(4))
        message = outbox.add(session, job_id, START_TASK, DEFAULT_QUEUE)  # as the API writes it
    worker0, api0 = scrape()
    assert metric_value(api0, "guardtune_jobs", status="validating_files") == 1
    assert metric_value(api0, "guardtune_queue_depth", queue="default") == 1
    assert metric_value(api0, "guardtune_queue_depth", queue="gpu") == 0
    assert metric_value(api0, "guardtune_queue_oldest_wait_seconds", queue="default") >= 0

    assert run_stage("validate", job_id, message.id) == "scan"
    worker1, api1 = scrape()
    finished = {"stage": "validate", "outcome": "finished"}
    assert (
        metric_value(worker1, "guardtune_stage_seconds_count", **finished)
        == metric_value(worker0, "guardtune_stage_seconds_count", **finished) + 1
    )
    assert metric_value(worker1, "guardtune_stage_seconds_sum", **finished) > metric_value(
        worker0, "guardtune_stage_seconds_sum", **finished
    )
    assert (
        metric_value(worker1, "guardtune_queue_wait_seconds_count", queue="default")
        == metric_value(worker0, "guardtune_queue_wait_seconds_count", queue="default") + 1
    )
    assert metric_value(api1, "guardtune_jobs", status="validating_files") == 0
    assert metric_value(api1, "guardtune_jobs", status="queued") == 1
    assert metric_value(api1, "guardtune_queue_depth", queue="default") == 0  # taken by the worker
    assert metric_value(api1, "guardtune_queue_depth", queue="gpu") == 1  # the scan it queued
    with session_scope() as session:
        [run] = session.scalars(select(StageRun).where(StageRun.job_id == job_id)).all()
    assert (run.stage, run.tokens) == ("validate", None)
    assert run.seconds > 0


def test_the_gate_counts_its_decision(scrape):
    from core.db import session_scope
    from core.models import SafetyReport
    from worker.tasks import run_stage

    side = {"asr_keyword": 0.1, "asr_judge": 0.1, "over_refusal": 0.0, "val_loss": None}
    with session_scope() as session:
        job_id = create_job(session, "org-gate-metrics", demo_lines(4), status="running", stage="evaluating")
        session.add(SafetyReport(job_id=job_id, evaluation={"base": side, "tuned": side}))
    store_adapter("org-gate-metrics", job_id)
    worker0, _ = scrape()
    assert run_stage("gate", job_id) == "release"
    worker1, _ = scrape()
    for name, labels in (
        ("guardtune_gate_decisions_total", {"decision": "released"}),
        ("guardtune_stage_seconds_count", {"stage": "gate", "outcome": "finished"}),
    ):
        assert metric_value(worker1, name, **labels) == metric_value(worker0, name, **labels) + 1, name
    assert metric_value(worker1, "guardtune_gate_decisions_total", decision="blocked") == metric_value(
        worker0, "guardtune_gate_decisions_total", decision="blocked"
    )


def test_a_gate_decision_rolled_back_is_not_counted(scrape, monkeypatch):
    """The decision's transaction fails after the decision (its result file cannot be
    stored): nothing is counted; the retry that commits counts it once."""
    from core.db import session_scope
    from core.models import SafetyReport
    from worker.pipeline import gate, results

    def unstorable(session, job) -> str:
        raise OSError("the object store is unreachable")

    side = {"asr_keyword": 0.1, "asr_judge": 0.1, "over_refusal": 0.0, "val_loss": None}
    with session_scope() as session:
        job_id = create_job(session, "org-gate-rollback", demo_lines(4), status="running", stage="evaluating")
        session.add(SafetyReport(job_id=job_id, evaluation={"base": side, "tuned": side}))
    store_adapter("org-gate-rollback", job_id)
    worker0, _ = scrape()
    with monkeypatch.context() as patch:
        patch.setattr(results, "attach_step_metrics", unstorable)
        with pytest.raises(OSError):
            gate.run(job_id)
    with session_scope() as session:
        assert session.get_one(SafetyReport, job_id).gate is None  # the decision was rolled back
    worker1, _ = scrape()
    gate.run(job_id)
    worker2, _ = scrape()
    released = [
        metric_value(text, "guardtune_gate_decisions_total", decision="released")
        for text in (worker0, worker1, worker2)
    ]
    assert released[1] == released[0]
    assert released[2] == released[0] + 1


def test_a_paused_jobs_estimated_finish_stays_cleared_when_a_stage_starts(pipeline_env):
    """A stage delivered to a paused job (paused after the stage was queued) starts, finds the
    job paused and stops: the measured estimate it computes on the way is not written."""
    from core.db import session_scope
    from core.models import Job
    from worker.tasks import run_stage

    with session_scope() as session:
        earlier = create_job(session, "org-paused-finish", demo_lines(4))
    record_runs(earlier, {stage: [(10.0, 4000 if stage == "train" else None)] for stage in STAGES})
    with session_scope() as session:
        job_id = create_job(session, "org-paused-finish", demo_lines(4), status="paused", stage="scanning")
    assert run_stage("scan", job_id) is None
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.estimated_finish) == ("paused", None)


def test_estimates_read_the_medians_of_the_newest_runs(pipeline_env):
    from core.db import session_scope
    from core.jobs import estimate
    from core.jobs.config import Hyperparameters
    from core.jobs.pipeline import Stage

    with session_scope() as session:
        job_id = create_job(session, "org-estimate", demo_lines(4))
    record_runs(job_id, {"validate": [(100.0, None), (1.0, None), (2.0, None), (3.0, None)]})
    record_runs(job_id, {"train": [(10.0, 1000), (10.0, 3000), (10.0, 2000)], "gate": [(4.0, None)]})
    with session_scope() as session:
        measured = estimate.measured(session, window=3)  # the 100 s validate run is out of the window
    assert measured.stage_seconds == {Stage.VALIDATE: 2.0, Stage.GATE: 4.0}
    assert (measured.tokens_per_second, measured.train_runs) == (200.0, 3)

    hp = Hyperparameters(n_epochs=3, batch_size=4)
    job = estimate.estimate(measured, n_examples=10, file_tokens=500, hp=hp)
    assert (job.examples, job.tokens, job.steps) == (10, 1500, 9)  # 3 batches (4, 4, 2) × 3 epochs
    assert job.stages[Stage.TRAIN] == 7.5  # 1500 tokens at 200 tokens/s
    assert job.stages[Stage.SCAN] is None
    assert job.seconds is None  # scan, evaluate and release never ran here
    assert estimate.remaining(measured, 1500, estimate.stages_from(Stage.TRAIN)) == 7.5 + 4.0
    assert estimate.remaining(measured, 1500, [Stage.SCAN, Stage.EVALUATE]) is None


def test_a_stage_sets_the_jobs_estimated_finish_from_the_measured_stages(pipeline_env):
    from core.db import session_scope
    from core.models import File, Job
    from worker.tasks import run_stage

    with session_scope() as session:
        earlier = create_job(session, "org-finish", demo_lines(4))
    record_runs(earlier, {stage: [(10.0, 4000 if stage == "train" else None)] for stage in STAGES})  # train: 400 tok/s
    with session_scope() as session:
        job_id = create_job(session, "org-finish", demo_lines(4))
        job = session.get_one(Job, job_id)
        session.get_one(File, job.training_file_id).n_tokens = 2000  # 1 epoch: 2000 tokens, 5 s of training
    started = time.time()
    assert run_stage("validate", job_id) == "scan"
    with session_scope() as session:
        finish = session.get_one(Job, job_id).estimated_finish
    expected = 5 * 10 + 5  # validate, scan, evaluate, gate, release: 10 s each; training 5 s
    assert int(started) + expected - 1 <= finish <= int(time.time()) + expected


@pytest.mark.slow
def test_a_training_stage_records_its_throughput(scrape):
    """A whole job (minutes on two loaded cores): the train stage records the tokens it
    trained and the metrics show its tokens per second."""
    from core.db import session_scope
    from core.models import File, Job, StageRun
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(session, "org-throughput", demo_lines(8))
        session.get_one(File, session.get_one(Job, job_id).training_file_id).n_tokens = 800
    worker0, _ = scrape()
    stage: str | None = "validate"
    while stage is not None:
        stage = run_stage(stage, job_id)
    worker1, _ = scrape()
    with session_scope() as session:
        runs = {run.stage: run for run in session.scalars(select(StageRun).where(StageRun.job_id == job_id))}
    assert set(runs) == set(STAGES)
    assert runs["train"].tokens == 800  # one epoch, all its steps in this run
    assert (
        metric_value(worker1, "guardtune_trained_tokens_total")
        == metric_value(worker0, "guardtune_trained_tokens_total") + 800
    )
    assert metric_value(worker1, "guardtune_train_tokens_per_second") == pytest.approx(800 / runs["train"].seconds)


@pytest.mark.slow
def test_a_real_worker_serves_the_metrics_of_its_pool_processes(stack_env, monkeypatch, tmp_path):
    """``guardtune worker``'s environment (multiprocess mode) on a real Celery worker: the
    release stage runs in a pool process, the main process serves its metrics."""
    from cli.guardtune import worker_env
    from core import outbox, registry
    from core.db import session_scope
    from core.jobs.pipeline import Stage
    from core.models import Job, SafetyReport
    from core.settings import get_settings

    port = free_port()
    apply_env(monkeypatch, {**stack_env, "GUARDTUNE_WORKER_METRICS_PORT": str(port)})
    clear_caches()
    with session_scope() as session:
        registry.seed_base_models(session, get_settings())
    org_id = f"org-worker-metrics-{time.monotonic_ns()}"
    with session_scope() as session:
        job_id = create_job(session, org_id, demo_lines(4), status="running", stage="gating")
    digest = store_adapter(org_id, job_id)
    with session_scope() as session:
        session.add(SafetyReport(job_id=job_id, gate={"released": True, "reasons": ["ok"], "adapter_sha256": digest}))
        message = outbox.add(session, job_id, Stage.RELEASE.task, Stage.RELEASE.queue)
    worker = start_worker(worker_env(), tmp_path / "worker.log", beat=False)
    try:
        outbox.send(message)
        url = f"http://127.0.0.1:{port}/metrics"

        def released() -> str | None:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    text = answer.read().decode()
            except OSError:
                return None  # not listening yet
            finished = metric_value(text, "guardtune_stage_seconds_count", stage="release", outcome="finished")
            return text if finished else None

        text = wait_for(released, 300, "the worker's metrics to show the release")  # a cold worker start
    finally:
        stop_process(worker)
    assert metric_value(text, "guardtune_stage_seconds_count", stage="release", outcome="finished") == 1
    assert metric_value(text, "guardtune_queue_wait_seconds_count", queue=Stage.RELEASE.queue) == 1
    with session_scope() as session:
        assert session.get_one(Job, job_id).status == "succeeded"
    # (without multiprocess mode the main process's own registry would show no release)


def exported_names(text: str) -> set[str]:
    """The sample names a scrape's families can have (a family without samples yet included)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_grafana_dashboard_reads_only_exported_metrics(scrape):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bguardtune_[a-z0-9_]+", expr)}
    worker, api = scrape()
    exported = exported_names(worker) | exported_names(api)
    assert used <= exported, f"the dashboard reads metrics no code exports: {sorted(used - exported)}"
    families = {
        "guardtune_jobs",
        "guardtune_queue_depth",
        "guardtune_queue_wait_seconds_bucket",
        "guardtune_stage_seconds_bucket",
        "guardtune_gate_decisions_total",
        "guardtune_train_tokens_per_second",
        "guardtune_inference_seconds_bucket",
        "guardtune_inference_batch_size_sum",
        "guardtune_inference_completion_tokens_total",
    }
    assert families <= used  # item 8's families each have a panel
