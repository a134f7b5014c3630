"""A real worker process executes a real task round trip, on Redis and on the
embedded (server-less) broker."""

from __future__ import annotations

import time

import pytest

from core.jobs.pipeline import REAPER_QUEUE
from core.queue import DEFAULT_QUEUE, GPU_QUEUE, make_celery
from core.settings import Settings
from tests.conftest import start_worker, stop_process


def round_trip(env: dict[str, str], tmp_path, queue: str) -> dict:
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        app = make_celery(Settings())
        result = app.send_task("guardtune.ping", args=[{"n": 42}], queue=queue)
        return result.get(timeout=90)
    finally:
        stop_process(worker)


@pytest.mark.parametrize("queue", [DEFAULT_QUEUE, GPU_QUEUE])
def test_round_trip_on_redis(deployment_env, monkeypatch, tmp_path, queue):
    from tests.conftest import apply_env

    apply_env(monkeypatch, deployment_env)
    reply = round_trip(deployment_env, tmp_path, queue)
    assert reply["echo"] == {"n": 42}
    assert ":" in reply["worker"]


@pytest.mark.slow  # the embedded broker is polled: seconds per round trip
def test_round_trip_on_embedded_broker(embedded_env, tmp_path):
    reply = round_trip(embedded_env, tmp_path, DEFAULT_QUEUE)
    assert reply["echo"] == {"n": 42}


def test_reliability_options():
    conf = make_celery(Settings()).conf
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert {q.name for q in conf.task_queues} == {DEFAULT_QUEUE, GPU_QUEUE, REAPER_QUEUE}


def test_an_unacked_message_delivered_longer_ago_than_asked_is_not_held(redis_url, monkeypatch):
    """On Redis a message a worker took and never acknowledged counts as held only if it was
    delivered within ``delivered_within_s`` (the reaper's stale timeout); one waiting in a
    queue counts however old, and without ``delivered_within_s`` every delivered one does."""
    from tests.conftest import apply_env

    apply_env(monkeypatch, {"GUARDTUNE_BROKER_URL": redis_url})
    from core.queue import broker_message_ids, enqueue, producer

    taken = enqueue("guardtune.ping", {}, queue=GPU_QUEUE, ignore_result=True, task_id="msg-taken")
    with producer().connection_for_read() as conn:
        channel = conn.default_channel
        message = channel.basic_get(GPU_QUEUE, no_ack=False)  # a worker took it: in the unacked hash
        assert message is not None
        assert message.headers["id"] == taken
        waiting = enqueue("guardtune.ping", {}, queue=GPU_QUEUE, ignore_result=True, task_id="msg-waiting")
        assert broker_message_ids(delivered_within_s=60) == {taken, waiting}  # delivered just now

        client = channel.client
        client.zadd(channel.unacked_index_key, {message.delivery_tag: time.time() - 120})  # as if 2 min ago
        assert broker_message_ids(delivered_within_s=60) == {waiting}  # its worker died before starting it
        assert broker_message_ids(delivered_within_s=180) == {taken, waiting}
        assert broker_message_ids() == {taken, waiting}
        assert broker_message_ids(delivered_within_s=0) == {waiting}  # waiting in a queue: never too old


def test_the_reaper_runs_on_its_own_queue_and_its_passes_expire():
    """A reap pass is routed to the reaper's queue (never behind a stage) and expires after one
    interval, so passes do not pile up; a worker that runs beat consumes that queue."""
    import worker.tasks  # noqa: F401  (registers the tasks and the schedule)
    from cli.guardtune import worker_argv
    from core.jobs.pipeline import REAP_TASK, REAPER_QUEUE
    from core.settings import get_settings
    from worker.celery_app import celery_app

    celery_app.finalize()
    [entry] = [e for e in celery_app.conf.beat_schedule.values() if e["task"] == REAP_TASK]
    assert entry["options"]["expires"] == get_settings().reaper_interval_s
    assert celery_app.amqp.router.route({}, REAP_TASK)["queue"].name == REAPER_QUEUE
    with_beat = worker_argv("default,gpu", with_beat=True)
    assert with_beat[with_beat.index("-Q") + 1] == f"default,gpu,{REAPER_QUEUE}"
    without = worker_argv("default,gpu", with_beat=False)
    assert without[without.index("-Q") + 1] == "default,gpu"


def test_a_redis_with_requirepass_takes_the_password_from_the_broker_url(tmp_path, monkeypatch):
    """Compose runs Redis with ``--requirepass`` and puts the password in the broker URL: with
    it the app's producer and rate limiter connect; without it Redis turns them away."""
    import subprocess

    import redis as redis_client

    from core.errors import RateLimited
    from core.ratelimit import RateLimiter
    from tests.conftest import apply_env, free_port
    from tests.worker.jobs import wait_for

    port, password = free_port(), "s3cret-redis-password"
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", password],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/0"

        def answers() -> bool:
            try:
                return redis_client.Redis.from_url(url).ping()
            except redis_client.ConnectionError:
                return False

        wait_for(answers, 20, "redis to answer")
        apply_env(monkeypatch, {"GUARDTUNE_BROKER_URL": url, "GUARDTUNE_HOME": str(tmp_path)})
        from core.queue import check_broker, enqueue

        check_broker()
        assert enqueue("guardtune.ping", {}, ignore_result=True, task_id="msg-with-password") == "msg-with-password"
        limiter = RateLimiter(1, redis_url=url)
        limiter.take("org-x")  # counted in Redis: the second take in the window is refused
        with pytest.raises(RateLimited):
            limiter.take("org-x")
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis.from_url(f"redis://127.0.0.1:{port}/0").ping()
    finally:
        server.kill()
        server.wait()


def test_a_send_waits_out_a_busy_embedded_broker(embedded_env):
    """The embedded broker is one SQLite file that the worker's polls lock (``BEGIN IMMEDIATE``)
    and that a loaded machine can keep locked for seconds: a send waits for the lock instead of
    failing after SQLite's default 5 s (kombu ≥ 5.7 raises on that failure, and its retry then
    breaks on the closed channel: the demo's failure in CI)."""
    import sqlite3
    import threading

    from core.queue import broker_message_ids, enqueue, producer
    from core.settings import get_settings

    producer().connection_for_write().ensure_connection(max_retries=1)  # creates the broker's tables
    enqueue("guardtune.ping", {"n": 1}, ignore_result=True)
    locker = sqlite3.connect(
        get_settings().home_dir / "broker.db", timeout=0, isolation_level=None, check_same_thread=False
    )
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(12.0, locker.commit)
    release.start()
    try:
        sent = enqueue("guardtune.ping", {"n": 2}, ignore_result=True)
    finally:
        release.join()
        locker.close()
    assert sent in broker_message_ids()
