"""Fixtures of the API tests: the API under test (``http``, ``sdk``), direct database and
object-store access to arrange and inspect state, a look at the broker's queue, the
"nothing changed" snapshot, and the SDK as the module's tenant (``client``) with a training
file it uploaded (``training_file``).

Transports: ``http`` and ``sdk`` reach the app in this process over ASGI (``asgi``, the
default: the fast tier) or the live server under uvicorn (``uvicorn``: ``live_api`` from
``tests/conftest.py``), both configured from ``deployment_env`` plus the module's
``API_ENV``. ``@pytest.mark.transport("uvicorn")`` (on a test or a module) chooses the real
server, ``transport("asgi", "uvicorn")`` runs the tests on both; the test id names the
transport (``test_x[asgi]``). The module's organizations (``tenant``, ``other_tenant``) are
the same on both: a test that runs on both must not depend on what the other run left.

Every organization made here is named ``api-test-…``; at the end of each module its
active jobs are cancelled and its queued pipeline tasks removed from the broker, so no
later worker picks them up."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from openai import OpenAI
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core.models import AuditRecord, File, Job, JobEvent, Organization
from core.settings import Settings
from core.storage import ObjectStore, make_store
from tests.api.helpers import GOOD, ORG_PREFIX, Snapshot, Tenant, pipeline_messages
from tests.conftest import serve_in_process

TRANSPORTS = ("asgi", "uvicorn")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``http`` (and so ``sdk``) with the transports of the test's ``transport`` marker."""
    if "http" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("transport")
    transports = marker.args if marker else ("asgi",)
    if not transports or not set(transports) <= set(TRANSPORTS):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: transport must be among {TRANSPORTS}: {transports}")
    metafunc.parametrize("http", transports, indirect=True, scope="module")


@pytest.fixture(scope="session")
def db(deployment_env) -> Iterator[Engine]:
    engine = create_engine(deployment_env["GUARDTUNE_DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def store(deployment_env) -> ObjectStore:
    settings = Settings(
        s3_endpoint_url=deployment_env["GUARDTUNE_S3_ENDPOINT_URL"], storage_url=deployment_env["GUARDTUNE_STORAGE_URL"]
    )
    return make_store(settings.storage, settings)


@pytest.fixture(scope="session")
def broker(deployment_env):
    import redis

    client = redis.Redis.from_url(deployment_env["GUARDTUNE_BROKER_URL"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def new_tenant(make_key) -> Callable[..., Tenant]:
    def _new(scope: str = "customer") -> Tenant:
        name = ORG_PREFIX + secrets.token_hex(4)
        org_id, key_id, key = make_key(name, scope)
        return Tenant(org_id, key_id, key, name)

    return _new


@pytest.fixture(scope="module")
def tenant(new_tenant) -> Tenant:
    return new_tenant()


@pytest.fixture(scope="module")
def other_tenant(new_tenant) -> Tenant:
    return new_tenant()


@pytest.fixture(scope="module")
def http(request, deployment_env) -> Iterator[httpx.Client]:
    """An httpx client of the API under test, by the transport in ``request.param``."""
    if request.param == "asgi":
        with serve_in_process({**deployment_env, **getattr(request.module, "API_ENV", {})}) as client:
            yield client
        return
    with httpx.Client(base_url=request.getfixturevalue("live_api").base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(http) -> Callable[[Tenant | str], OpenAI]:
    """``sdk(tenant or key)``: the official SDK on the same transport as ``http`` (in this
    process: through ``http`` itself; on the live server: a connection pool of its own)."""
    base_url = f"{str(http.base_url).rstrip('/')}/v1"
    in_process = {"http_client": http} if http.base_url.host == "testserver" else {}

    def _client(who: Tenant | str) -> OpenAI:
        key = who.key if isinstance(who, Tenant) else who
        return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30, **in_process)

    return _client


@pytest.fixture(scope="module")
def client(sdk, tenant) -> OpenAI:
    """The SDK as the module's ``tenant``."""
    return sdk(tenant)


@pytest.fixture(scope="module")
def training_file(client):
    """A small valid training file (``GOOD``) the module's ``tenant`` uploaded."""
    return client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")


@pytest.fixture(autouse=True, scope="module")
def _leave_no_work_behind(db, broker):
    yield
    with Session(db) as session, session.begin():
        mine = select(Organization.id).where(Organization.name.startswith(ORG_PREFIX))
        job_ids = set(session.scalars(select(Job.id).where(Job.org_id.in_(mine))))
        session.execute(
            update(Job)
            .where(Job.org_id.in_(mine), Job.status.in_(("validating_files", "queued", "running")))
            .values(status="cancelled", cancel_requested=True)
        )
    for raw, job_id in pipeline_messages(broker):
        if job_id in job_ids:
            broker.lrem("default", 0, raw)


@pytest.fixture(scope="module")
def snapshot(db, store, broker) -> Callable[[Tenant], Snapshot]:
    def _take(t: Tenant) -> Snapshot:
        with Session(db) as session:
            job_ids = select(Job.id).where(Job.org_id == t.org_id)
            return Snapshot(
                files=session.scalar(select(func.count()).select_from(File).where(File.org_id == t.org_id)),
                jobs=session.scalar(select(func.count()).select_from(Job).where(Job.org_id == t.org_id)),
                events=session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id.in_(job_ids))),
                audit=session.scalar(select(func.count()).select_from(AuditRecord)),
                objects=tuple(store.list(f"orgs/{t.org_id}/")),
                queued=len(pipeline_messages(broker)),
            )

    return _take


@pytest.fixture(scope="module")
def unchanged(snapshot) -> Callable:
    """``with unchanged(tenant): <rejected request>`` asserts that no row, stored object,
    audit record or queued task appeared."""

    @contextmanager
    def _check(t: Tenant):
        before = snapshot(t)
        yield
        after = snapshot(t)
        assert after == before, f"a rejected request changed state:\n before={before}\n after={after}"

    return _check
