"""Faults on the real stack (uvicorn API, Celery worker processes, Postgres, Redis, S3 on
a tiny model): the API SIGKILLed between a job's commit and its enqueue, a private Redis
restarted empty under a queued job, a worker SIGKILLed after taking a message and before
starting its stage, the worker SIGKILLed during scan, train and evaluate,
a private Postgres restarted mid-job, and two organizations' jobs queued behind each other
on one worker for longer than the stale timeout. Every job still ends, none is stranded,
no stage runs twice and a wait in the queue is never reported as a lost worker.

Only private services are killed: a ``redis-server`` and a Postgres cluster started here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import openai
import pytest
from openai import OpenAI
from sqlalchemy import create_engine

from tests.conftest import REPO, child_env, create_key, free_port, start_api, start_worker, stop_process, wait_http
from tests.worker.conftest import demo_lines, small_pipeline_env
from tests.worker.faults import (
    JobReader,
    PrivatePostgres,
    PrivateRedis,
    fresh_database,
    migrate,
    stage_runs,
)
from tests.worker.jobs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # fault injection: kills and restarts real processes

STALE_S = 6.0
PIPELINE = ["validate", "scan", "train", "evaluate", "gate", "release"]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> PrivateRedis:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(deployment_env, tiny_model, redis_server) -> dict[str, str]:
    with fresh_database() as url:
        stack = {
            **deployment_env,
            **small_pipeline_env(tiny_model),
            "GUARDTUNE_DATABASE_URL": url,
            "GUARDTUNE_BROKER_URL": redis_server.url,
            "GUARDTUNE_STORAGE_URL": f"{deployment_env['GUARDTUNE_STORAGE_URL']}/faults",
            "GUARDTUNE_HEARTBEAT_INTERVAL_S": "0.5",
            "GUARDTUNE_STALE_JOB_AFTER_S": str(STALE_S),
            "GUARDTUNE_REAPER_INTERVAL_S": "1",
            "GUARDTUNE_RETRY_BACKOFF_S": "1",
            "GUARDTUNE_MAX_CONCURRENT_JOBS_PER_ORG": "20",
            "GUARDTUNE_LOG_JSON": "true",
        }
        migrate(stack)
        yield stack


@pytest.fixture(scope="module")
def db(env) -> JobReader:
    reader = JobReader(env["GUARDTUNE_DATABASE_URL"])
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def api(env, tmp_path_factory):
    server = start_api(env, tmp_path_factory.mktemp("faults-api") / "api.log")
    yield server
    stop_process(server.process)


def _client(base_url: str, url: str, org: str) -> tuple[OpenAI, str]:
    engine = create_engine(url)
    org_id, _, key = create_key(engine, org)
    engine.dispose()
    return OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0), org_id


def _create(client: OpenAI, lines: int = 8, epochs: int = 1) -> str:
    file_id = client.files.create(file=("train.jsonl", demo_lines(lines)), purpose="fine-tune").id
    return client.fine_tuning.jobs.create(
        model="tiny", training_file=file_id, hyperparameters={"n_epochs": epochs, "batch_size": 4}
    ).id


def _hooked_worker(env: dict[str, str], log_path, hook: str, marker, sleep_s: float) -> subprocess.Popen:
    """A worker whose first call of ``hook`` pauses ``sleep_s`` (tests/worker/hooked_worker.py)."""
    hooked = {**env, "FAULT_HOOK": hook, "FAULT_MARKER": str(marker), "FAULT_SLEEP_S": str(sleep_s)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker.hooked_worker"],
        cwd=REPO,
        env=child_env(hooked),
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool process
    process.wait()


def _assert_ran_once_and_clean(db: JobReader, job_id: str, *logs) -> None:
    """Succeeded; every stage ran exactly once; no loss reported; every outbox row consumed."""
    job = db.job(job_id)
    assert job.status == "succeeded", (job.error, db.events(job_id))
    runs = Counter(stage for log in logs for j, stage in stage_runs(log) if j == job_id)
    assert runs == Counter(PIPELINE), runs
    assert not [m for m in db.events(job_id) if "lost" in m.lower()]
    assert all(row.consumed_at is not None for row in db.outbox(job_id))


def _finish_on_a_gpu_worker(env, db, job_id: str, tmp_path):
    """Start a GPU-queue worker (log ``gpu.log``), wait for the job to end, stop the worker;
    returns the finished job."""
    gpu = start_worker(env, tmp_path / "gpu.log", queues="gpu", beat=False)
    try:
        return db.finished(job_id)
    finally:
        stop_process(gpu)


def test_api_killed_between_commit_and_enqueue(env, db, tmp_path):
    port = free_port()
    crashing = subprocess.Popen(
        [sys.executable, "-m", "tests.worker.crash_api", str(port)],
        cwd=REPO,
        env=child_env(env),
        stdout=(tmp_path / "api.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, crashing)
        client, org_id = _client(f"http://127.0.0.1:{port}", env["GUARDTUNE_DATABASE_URL"], "faults-api-crash")
        with pytest.raises(openai.APIConnectionError):
            _create(client)
        assert crashing.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop_process(crashing)
    [job_id] = db.job_ids(org_id)
    assert db.job(job_id).status == "validating_files"  # committed...
    [row] = db.outbox(job_id)
    assert row.sent_at is None  # ...never sent
    assert row.task == "guardtune.pipeline.start"

    worker = start_worker(env, tmp_path / "worker.log")
    try:
        db.finished(job_id)
    finally:
        stop_process(worker)
    _assert_ran_once_and_clean(db, job_id, tmp_path / "worker.log")
    assert db.outbox(job_id)[0].sends == 1  # sent once, by the reaper


def test_redis_restarted_empty_under_a_queued_job(env, db, api, redis_server, tmp_path):
    client, _ = _client(api.base_url, env["GUARDTUNE_DATABASE_URL"], "faults-redis")
    light = start_worker(env, tmp_path / "light.log", queues="default")  # validates; nobody takes GPU work
    try:
        job_id = _create(client)
        scan = wait_for(
            lambda: (r := db.outbox(job_id)[-1]).task.endswith(".scan") and r.sent_at and r,
            60,
            "the job queued for scanning",
        )
        assert db.job(job_id).status == "queued"
        assert scan.id in redis_server.queued_ids()
        redis_server.restart_empty()
        assert scan.id not in redis_server.queued_ids()  # lost with everything else
        job = _finish_on_a_gpu_worker(env, db, job_id, tmp_path)
    finally:
        stop_process(light)
    assert job.status == "succeeded", job.error
    _assert_ran_once_and_clean(db, job_id, tmp_path / "light.log", tmp_path / "gpu.log")
    assert [r.sends for r in db.outbox(job_id) if r.id == scan.id] == [2]  # replayed once, same id


def test_worker_killed_after_taking_a_message_before_starting_it(env, db, api, redis_server, tmp_path):
    """A GPU worker takes the scan message (Redis moves it to its ``unacked`` hash) and is
    SIGKILLed before it consumes the outbox row: no lease, the row live, the message neither
    queued nor acknowledged. Redis would hand it out again only after the visibility timeout
    (the default hour); the reaper counts a delivery older than the stale timeout as lost and
    replays it (same id) within a few stale timeouts, and the job ends with scan run once."""
    client, _ = _client(api.base_url, env["GUARDTUNE_DATABASE_URL"], "faults-unacked")
    light = start_worker(env, tmp_path / "light.log", queues="default")  # validates and reaps
    marker = tmp_path / "taken"
    taker = _hooked_worker(
        {**env, "FAULT_QUEUES": "gpu", "FAULT_BEAT": "0"}, tmp_path / "taker.log", "core.outbox:consume", marker, 600
    )
    try:
        job_id = _create(client)
        wait_for(marker.exists, 120, "the GPU worker holding the scan message")
        taken_at = time.time()
        scan = db.outbox(job_id)[-1]
        assert scan.task.endswith(".scan")
        assert scan.consumed_at is None
        assert scan.sends == 1
        assert db.job(job_id).worker_id is None
        assert scan.id in redis_server.unacked_ids()
        _kill_group(taker)
        job = _finish_on_a_gpu_worker(env, db, job_id, tmp_path)
    finally:
        stop_process(taker)
        stop_process(light)
    assert job.status == "succeeded", job.error
    _assert_ran_once_and_clean(db, job_id, tmp_path / "light.log", tmp_path / "taker.log", tmp_path / "gpu.log")
    [replayed] = [r for r in db.outbox(job_id) if r.id == scan.id]
    assert replayed.sends == 2  # replayed once, same id
    assert replayed.sent_at - taken_at < 3 * STALE_S  # within a few stale timeouts, not the visibility timeout
    assert scan.id in redis_server.unacked_ids()  # the dead worker's copy is still there, redelivered in an hour


HOOKS = [
    ("scan", "safety.scan:scan_dataset", "scanning"),
    ("train", "safety.trainer:train", "training"),
    ("evaluate", "worker.pipeline.evaluate:evaluate_model", "evaluating"),
]


def test_worker_killed_during_scan_train_and_evaluate_each_stage_retried(env, db, api, tmp_path):
    """One job, its worker SIGKILLed inside each GPU stage in turn: each stage is retried
    once by the reaper and the job ends. Three losses in all, one per stage: attempts are
    counted per stage, so the job does not fail ``worker_lost``."""
    client, _ = _client(api.base_url, env["GUARDTUNE_DATABASE_URL"], "faults-kill")
    job_id, logs = None, []
    for n, (stage, hook, word) in enumerate(HOOKS):
        logs.append(tmp_path / f"worker-{n}.log")
        marker = tmp_path / f"in-{stage}"
        worker = _hooked_worker(env, logs[-1], hook, marker, sleep_s=600)
        try:
            job_id = job_id or _create(client)
            wait_for(marker.exists, 240, f"the worker inside {stage}")
            held = db.job(job_id)
            assert held.stage == word
            assert held.worker_id is not None
            _kill_group(worker)
        finally:
            stop_process(worker)
    logs.append(tmp_path / "last.log")
    last = start_worker(env, logs[-1])
    try:
        job = db.finished(job_id)
    finally:
        stop_process(last)
    assert job.status == "succeeded", (job.error, db.events(job_id))
    lost = [m for m in db.events(job_id) if "lost" in m.lower()]
    assert lost == [f"Worker lost during {word}; retrying the stage (retry 1 of 2)" for _, _, word in HOOKS]
    runs = Counter(s for log in logs for j, s in stage_runs(log) if j == job_id)
    assert runs == Counter(PIPELINE) + Counter(stage for stage, _, _ in HOOKS)  # killed stages twice, others once


def test_queue_wait_longer_than_the_stale_timeout_is_not_a_lost_worker(env, db, api, tmp_path):
    """Two organizations' jobs on one GPU worker (the light stages and the reaper on another,
    as in production); whichever trains first holds the GPU worker for 4× the stale timeout
    while the other's next stage waits (held by the dispatcher for the one GPU slot, then in the
    broker's queue), its lease released, its heartbeat old."""
    clients = [_client(api.base_url, env["GUARDTUNE_DATABASE_URL"], f"faults-wait-{n}")[0] for n in "ab"]
    light = start_worker(env, tmp_path / "light.log", queues="default")
    gpu = _hooked_worker(
        {**env, "FAULT_QUEUES": "gpu", "FAULT_BEAT": "0"},
        tmp_path / "gpu.log",
        "safety.trainer:train",
        tmp_path / "slow",
        4 * STALE_S,
    )
    try:
        jobs = [_create(client) for client in clients]
        for job_id in jobs:
            db.finished(job_id)
    finally:
        stop_process(gpu)
        stop_process(light)
    waits = []
    for job_id in jobs:
        _assert_ran_once_and_clean(db, job_id, tmp_path / "light.log", tmp_path / "gpu.log")
        rows = db.outbox(job_id)
        assert [r.task.rsplit(".", 1)[1] for r in rows] == ["start", *PIPELINE[1:]]
        assert all(r.sends == 1 for r in rows)  # nothing replayed
        waits.append(max(r.consumed_at - r.created_at for r in rows))  # held for the GPU slot, then queued
    assert max(waits) >= 3 * STALE_S, waits  # the premise: one job really waited that long
    reaps = (tmp_path / "light.log").read_text().count("Task guardtune.reap[")
    assert reaps >= 3 * STALE_S  # and the reaper looked at it all along (every second)


def test_postgres_restarted_mid_job(env, tmp_path):
    pg = PrivatePostgres()
    try:
        stack = {**env, "GUARDTUNE_DATABASE_URL": pg.url, "GUARDTUNE_STORAGE_URL": f"file://{tmp_path / 'objects'}"}
        migrate(stack)
        reader = JobReader(pg.url)
        server = start_api(stack, tmp_path / "api.log")
        marker = tmp_path / "training"
        worker = _hooked_worker(stack, tmp_path / "worker.log", "safety.trainer:train", marker, 8)
        try:
            client, _ = _client(server.base_url, pg.url, "faults-pg")
            job_id = _create(client)
            wait_for(marker.exists, 180, "the worker inside training")
            pg.restart(down_s=2.5)  # mid-stage: the heartbeat and the API lose their connections
            reader.ping()
            job = reader.finished(job_id)
            assert job.status == "succeeded", (job.error, reader.events(job_id))
            assert client.fine_tuning.jobs.retrieve(job_id).status == "succeeded"  # the API reconnected
            assert '"heartbeat_failed"' in (tmp_path / "worker.log").read_text()  # the outage was felt
        finally:
            stop_process(worker)
            stop_process(server.process)
            reader.close()
    finally:
        pg.close()
