"""A real worker process executes a real task round trip, on Redis and on the
embedded (server-less) broker."""

from __future__ import annotations

import pytest

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
    assert reply["echo"] == {"n": 42} and ":" in reply["worker"]


@pytest.mark.slow  # the embedded broker is polled: seconds per round trip
def test_round_trip_on_embedded_broker(embedded_env, tmp_path):
    reply = round_trip(embedded_env, tmp_path, DEFAULT_QUEUE)
    assert reply["echo"] == {"n": 42}


def test_reliability_options():
    conf = make_celery(Settings()).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert {q.name for q in conf.task_queues} == {DEFAULT_QUEUE, GPU_QUEUE}
