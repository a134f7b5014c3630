"""Every log line of a service is one JSON object with the app's fields (``GUARDTUNE_LOG_JSON``):
uvicorn's access and server lines on the real API server, Celery's lines under the worker's
logging setup, like the app's own."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
import structlog

from tests.conftest import apply_env, clear_caches, free_port, start_http_process, stop_process

APP_FIELDS = {"event", "level", "timestamp"}


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` as JSON (fails on the first that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_uvicorn_access_and_server_lines_are_json_with_the_apps_fields(deployment_env, tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    env = {**deployment_env, "GUARDTUNE_LOG_JSON": "true"}
    server = start_http_process(argv, env, tmp_path / "api.log", port, "/healthz", 60, "API")
    try:
        assert httpx.get(f"{server.base_url}/healthz", headers={"x-request-id": "trace-json-1"}).status_code == 200
    finally:
        stop_process(server.process)
    lines = json_lines(server.log())
    mine = [line for line in lines if line.get("request_id") == "trace-json-1"]  # not the start-up probes'
    [access] = [line for line in mine if line.get("logger") == "uvicorn.access"]
    [app] = [line for line in mine if line["event"] == "request"]
    assert APP_FIELDS <= set(access)
    assert APP_FIELDS <= set(app)
    assert (access["level"], access["method"], access["path"], access["status_code"]) == (
        "info",
        "GET",
        "/healthz",
        200,
    )
    assert '"GET /healthz HTTP/1.1" 200' in access["event"]
    assert any(line.get("logger") == "uvicorn.error" and "Uvicorn running" in line["event"] for line in lines)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put structlog's configuration and the root logger back as they were."""
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_celery_lines_go_through_the_apps_json_logging(embedded_env, monkeypatch, capsys, restored_logging):
    apply_env(monkeypatch, {**embedded_env, "GUARDTUNE_LOG_JSON": "true"})
    clear_caches()
    from worker.celery_app import celery_app

    celery_app.log.setup(loglevel="INFO", redirect_stdouts=True)  # what a worker (and each pool process) runs
    assert type(sys.stdout).__name__ != "LoggingProxy"  # the app's setup ran instead of Celery's: no redirection
    capsys.readouterr()
    logging.getLogger("celery.worker.strategy").info("Task %s[%s] received", "guardtune.ping", "id-1")
    structlog.get_logger("worker.tasks").info("stage_started", job_id="ftjob-1")
    celery, app = json_lines(capsys.readouterr().err)
    assert APP_FIELDS <= set(celery)
    assert (celery["event"], celery["level"], celery["logger"]) == (
        "Task guardtune.ping[id-1] received",
        "info",
        "celery.worker.strategy",
    )
    assert APP_FIELDS <= set(app)
    assert app["job_id"] == "ftjob-1"
