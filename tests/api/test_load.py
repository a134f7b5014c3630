"""Many requests at once, on Postgres and on the embedded SQLite database, against the real
server: hundreds of pollers on one key never stall the API (no pool/thread deadlock), and
the per-organization job limit is exact under parallel creates."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine

from migrations import migrate
from tests.api.helpers import BASE_MODEL, GOOD, ORG_PREFIX, Tenant, auth
from tests.conftest import TEST_SECRET, create_key, start_api, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # hundreds of concurrent clients against two real servers

POLLERS = 200  # more than the API's threads (40) and database connections
ROUNDS = 3
LIMIT = 4  # GUARDTUNE_MAX_CONCURRENT_JOBS_PER_ORG's default
CREATES = 20


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """The API on the embedded default (SQLite, local objects, embedded broker): its base
    URL and database URL."""
    home = tmp_path_factory.mktemp("sqlite-home")
    url = f"sqlite:///{home / 'guardtune.db'}"
    migrate.upgrade(url)
    env = {
        "GUARDTUNE_ENV": "test",
        "GUARDTUNE_HOME": str(home),
        "GUARDTUNE_SECRET_KEY": TEST_SECRET,
        "GUARDTUNE_LOG_JSON": "false",
        "GUARDTUNE_EMBEDDED_WORKER": "false",
    }
    server = start_api(env, home / "api.log")
    yield server.base_url, url
    stop_process(server.process)


@pytest.fixture(params=["postgres", "sqlite"])
def api(request, new_tenant) -> tuple[str, Tenant]:
    """A server on each database, and an organization of its own there."""
    if request.param == "postgres":
        return request.getfixturevalue("live_api").base_url, new_tenant()
    base_url, url = request.getfixturevalue("sqlite_api")
    engine = create_engine(url)
    name = ORG_PREFIX + secrets.token_hex(4)
    tenant = Tenant(*create_key(engine, name), name)
    engine.dispose()
    return base_url, tenant


def upload(base_url: str, tenant: Tenant) -> str:
    r = httpx.post(
        f"{base_url}/v1/files",
        headers=auth(tenant),
        files={"file": ("t.jsonl", GOOD)},
        data={"purpose": "fine-tune"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processed", r.text
    return r.json()["id"]


def cancel_all(base_url: str, tenant: Tenant) -> None:
    jobs = httpx.get(f"{base_url}/v1/fine_tuning/jobs?limit=100", headers=auth(tenant), timeout=30).json()["data"]
    for job in jobs:
        httpx.post(f"{base_url}/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(tenant), timeout=30)


async def poll(base_url: str, tenant: Tenant, path: str) -> Counter:
    """``POLLERS`` clients at once, each polling ``path`` ``ROUNDS`` times; statuses and
    exception names counted. The 25 s timeout is under the 30 s the pool waits for a
    connection: a request stuck behind a deadlock is counted as a ReadTimeout."""
    # Idle connections expire here before the server's 5 s keep-alive ends them (no close race).
    limits = httpx.Limits(max_connections=POLLERS, max_keepalive_connections=POLLERS, keepalive_expiry=2)
    outcomes: Counter = Counter()
    async with httpx.AsyncClient(base_url=base_url, headers=auth(tenant), limits=limits, timeout=25) as client:

        async def poller() -> None:
            for _ in range(ROUNDS):
                try:
                    outcomes[(await client.get(path)).status_code] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(poller() for _ in range(POLLERS)))
    return outcomes


def test_hundreds_of_pollers_on_one_key_never_stall_the_api(api):
    base_url, tenant = api
    file_id = upload(base_url, tenant)
    r = httpx.post(
        f"{base_url}/v1/fine_tuning/jobs",
        headers=auth(tenant),
        timeout=30,
        json={"model": BASE_MODEL, "training_file": file_id},
    )
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    try:
        outcomes = asyncio.run(poll(base_url, tenant, f"/v1/fine_tuning/jobs/{job_id}"))
    finally:
        cancel_all(base_url, tenant)
    assert outcomes == Counter({200: POLLERS * ROUNDS})


def test_parallel_creates_respect_the_job_limit_exactly(api):
    base_url, tenant = api
    file_id = upload(base_url, tenant)

    def create(_: int) -> int:
        r = httpx.post(
            f"{base_url}/v1/fine_tuning/jobs",
            headers=auth(tenant),
            timeout=60,
            json={"model": BASE_MODEL, "training_file": file_id},
        )
        assert r.status_code in (200, 429), r.text
        return r.status_code

    try:
        with ThreadPoolExecutor(CREATES) as pool:
            statuses = Counter(pool.map(create, range(CREATES)))
        listed = httpx.get(f"{base_url}/v1/fine_tuning/jobs?limit=100", headers=auth(tenant), timeout=30).json()
    finally:
        cancel_all(base_url, tenant)
    assert statuses == Counter({200: LIMIT, 429: CREATES - LIMIT})
    assert len(listed["data"]) == LIMIT
