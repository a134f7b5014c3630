"""Shared fixtures: real Postgres, Redis, an S3 server (moto server mode), a live
API under uvicorn (or the same app served in this process, :func:`serve_in_process`)
and Celery worker processes.

Services are required, never skipped: a test that needs Postgres or Redis fails
when they are down (``.ci/run`` starts them).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core import waiting

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("GUARDTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GUARDTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_SECRET = "test-secret-" + "x" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of a Prometheus scrape's text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def clear_caches() -> None:
    """Forget process-wide cached settings, engines, stores, producers, rate limiters and API keys."""
    from api import keycache
    from core import db, queue, ratelimit, settings, storage

    settings.get_settings.cache_clear()
    ratelimit.limiter.cache_clear()
    db.get_engine.cache_clear()
    db._factory.cache_clear()
    storage._cached_store.cache_clear()
    queue.producer.cache_clear()
    keycache.forget_all()


def _pg_admin():
    import psycopg

    dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama (seed 0) with the real SmolLM2 chat tokenizer,
    built once per session; read-only (load a fresh model from it per test)."""
    from safety.base_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh Postgres database, migrated to head, dropped afterwards."""
    from migrations import migrate

    name = f"gt_test_{os.getpid()}_{secrets.token_hex(3)}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    yield url
    clear_caches()
    with _pg_admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database number of its own (1-15), claimed with a lock key so that concurrent
    sessions (pytest-xdist workers, parallel runs) never share one; flushed before and after."""
    import redis

    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    for db in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS_URL}/{db}", socket_connect_timeout=5)
        if client.set("guardtune-test:claimed-by", token, nx=True, ex=3600):
            break
    else:
        pytest.fail("every Redis test database (1-15) is claimed by another test session")
    client.flushdb()
    client.set("guardtune-test:claimed-by", token, ex=3600)  # the flush took the claim too
    yield f"{REDIS_URL}/{db}"
    client.flushdb()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 HTTP endpoint (moto in server mode) with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = "guardtune-test"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield S3Server(endpoint, bucket)
    server.stop()


@pytest.fixture(scope="session")
def locked_bucket(s3) -> str:
    """A second bucket on the S3 server, created with Object Lock (hence versioned), as
    compose creates its bucket."""
    import boto3

    name = "guardtune-test-locked"
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture(scope="session")
def deployment_env(pg_url, redis_url, s3, tmp_path_factory) -> dict[str, str]:
    """GUARDTUNE_* variables of a production-shaped deployment: Postgres, Redis, S3."""
    home = tmp_path_factory.mktemp("home")
    return {
        "GUARDTUNE_ENV": "test",
        "GUARDTUNE_HOME": str(home),
        "GUARDTUNE_DATABASE_URL": pg_url,
        "GUARDTUNE_BROKER_URL": redis_url,
        "GUARDTUNE_STORAGE_URL": f"s3://{s3.bucket}/{home.name}",
        "GUARDTUNE_S3_ENDPOINT_URL": s3.endpoint,
        "GUARDTUNE_SECRET_KEY": TEST_SECRET,
        "GUARDTUNE_LOG_JSON": "false",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("GUARDTUNE_") and not k.startswith("GUARDTUNE_TEST_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    clear_caches()


@pytest.fixture
def configured(deployment_env, monkeypatch) -> Iterator[dict[str, str]]:
    """This process configured as the deployment (settings, engine, store, broker)."""
    from core import registry
    from core.db import session_scope
    from core.settings import get_settings

    apply_env(monkeypatch, deployment_env)
    with session_scope() as session:
        registry.seed_base_models(session, get_settings())
    yield deployment_env
    clear_caches()


@pytest.fixture
def embedded_env(tmp_path, monkeypatch) -> Iterator[dict[str, str]]:
    """The embedded default (SQLite, local folder, server-less broker) in a tmp home."""
    env = {"GUARDTUNE_HOME": str(tmp_path / "var"), "GUARDTUNE_LOG_JSON": "false"}
    apply_env(monkeypatch, env)
    yield env
    clear_caches()


def child_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDTUNE_") or k.startswith("GUARDTUNE_TEST_")}
    return {**base, **env, "PYTHONUNBUFFERED": "1"}


@dataclass
class LiveServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Until ``url`` answers below 500 (see :func:`core.waiting.wait_http`)."""
    waiting.wait_http(url, timeout_s, process, ready=lambda status: status < 500)


def start_http_process(
    argv: list[str], env: dict[str, str], log_path: Path, port: int, health: str, timeout_s: float, what: str
) -> LiveServer:
    """``argv`` in a subprocess serving HTTP on ``port``, once ``health`` answers; on failure
    the process is stopped and the error quotes the end of its log."""
    log = log_path.open("ab")
    process = subprocess.Popen(argv, cwd=REPO, env=child_env(env), stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_http(f"{server.base_url}{health}", timeout_s, process)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"{what} did not start:\n{server.log()[-3000:]}") from None
    return server


def start_api(env: dict[str, str], log_path: Path) -> LiveServer:
    """The API's own server (``api.server``: uvicorn with its limits) in a subprocess, over real HTTP."""
    port = free_port()
    argv = [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return start_http_process(argv, env, log_path, port, "/healthz", 60, "API")


def start_worker(
    env: dict[str, str], log_path: Path, queues: str = "default,gpu", beat: bool = True
) -> subprocess.Popen:
    """A real Celery worker process (``guardtune worker``; ``beat``: with the reaper)."""
    from cli.guardtune import worker_argv

    log = log_path.open("ab")
    return subprocess.Popen(
        worker_argv(queues, with_beat=beat),
        cwd=REPO,
        env=child_env(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen, timeout_s: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def _live_servers(deployment_env) -> Iterator[dict[tuple[tuple[str, str], ...], LiveServer]]:
    """The servers ``live_api`` started, by their environment; stopped at the end of the session."""
    servers: dict[tuple[tuple[str, str], ...], LiveServer] = {}
    yield servers
    for server in servers.values():
        stop_process(server.process)


@pytest.fixture(scope="module")
def live_api(request, deployment_env, _live_servers, tmp_path_factory) -> LiveServer:
    """The API under uvicorn against Postgres + Redis + S3, configured by ``deployment_env``
    and the module's ``API_ENV``: one server per distinct environment, shared by the modules
    that ask for the same one (its log holds all their requests)."""
    env = {**deployment_env, **getattr(request.module, "API_ENV", {})}
    key = tuple(sorted(env.items()))
    if key not in _live_servers:
        _live_servers[key] = start_api(env, tmp_path_factory.mktemp("api") / "api.log")
    return _live_servers[key]


@contextmanager
def serve_in_process(env: dict[str, str]) -> Iterator[httpx.Client]:
    """The API app (``api.app.create_app``) served in this process for ``http://testserver``:
    fastapi's ``TestClient``, a sync ``httpx.Client`` over the ASGI app with its lifespan run,
    so it can be the ``http_client`` of an ``openai.OpenAI``. This process is configured by
    ``env`` as :func:`start_api` configures its subprocess, for as long as the client is
    open; the environment, the process-wide caches and structlog's configuration (which
    ``create_app`` sets) are restored afterwards. No uvicorn: its limits (header size,
    keep-alive) and the server's log are only on :func:`start_api`'s server. An exception the
    app does not turn into a response is raised in the test."""
    import structlog
    from fastapi.testclient import TestClient

    from api.app import create_app

    logging_config = structlog.get_config()
    with pytest.MonkeyPatch.context() as monkeypatch:
        apply_env(monkeypatch, env)
        try:
            with TestClient(create_app(), base_url="http://testserver") as client:
                yield client
        finally:
            structlog.configure(**logging_config)
            clear_caches()


@pytest.fixture(scope="session")
def make_key(deployment_env):
    """Create an organization (if new) and an API key directly in the database."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from core import registry
    from core.settings import Settings

    engine = create_engine(deployment_env["GUARDTUNE_DATABASE_URL"])
    with Session(engine) as session, session.begin():
        registry.seed_base_models(session, Settings())
    yield lambda org_name, scope="customer": create_key(engine, org_name, scope)
    engine.dispose()


def create_key(engine, org_name: str, scope: str = "customer") -> tuple[str, str, str]:
    """An organization (if new) and an API key for it, written with ``engine``:
    ``(org id, key id, plaintext key)``."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from core.ids import new_id
    from core.models import ApiKey, Organization
    from core.orgs.apikeys import generate_key

    with Session(engine) as session, session.begin():
        org = session.scalar(select(Organization).where(Organization.name == org_name))
        if org is None:
            org = Organization(id=new_id("org"), name=org_name)
            session.add(org)
            session.flush()
        plaintext, prefix, digest = generate_key(TEST_SECRET)
        key = ApiKey(id=new_id("key"), org_id=org.id, prefix=prefix, key_hash=digest, scope=scope)
        session.add(key)
        return org.id, key.id, plaintext


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip where torch sees no CUDA device (only those)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
