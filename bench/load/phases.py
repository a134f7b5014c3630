"""The measured scenarios: the phases of a load run (``--concurrency`` request loops on one
keep-alive client, each stopping by itself at the phase deadline, with the counters read
around the timed part) and the in-process cost of the work behind one poll.

Contracts: a phase's result keys are those of ``bench/results/api_load.json``'s
``databases.<db>.endpoints.<phase>``; an unexpected status or an exception counts as an
error and the loop goes on until the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentile
from bench.load.fixtures import SECRET, pg_sessions
from bench.load.server import postgres_cpu_s, proc_cpu_s, route_metric, server_latency

PHASES = ("healthz", "job", "job_304", "events", "events_304", "healthz_2")


JOB_ROUTE = "/v1/fine_tuning/jobs/{fine_tuning_job_id}"


EVENTS_ROUTE = "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"


ROUTE_OF = {
    "healthz": "/healthz",
    "healthz_2": "/healthz",
    "job": JOB_ROUTE,
    "job_304": JOB_ROUTE,
    "events": EVENTS_ROUTE,
    "events_304": EVENTS_ROUTE,
}


def in_process_cost(url: str, key: str, job_ids: list[str], events_limit: int, n: int = 300) -> dict[str, float]:
    """CPU ms per call of the work behind each poll, called directly in this process (one
    thread, no HTTP, no FastAPI): the key lookup, the service call with its queries, the
    presenter, the JSON body and its ETag — the database layer's share of a request."""
    import json

    from sqlalchemy import select

    from api.deps import Caller
    from api.jobs.schemas import JobEvent as JobEventOut
    from api.jobs.service import JobService
    from api.schemas import CursorPage, page
    from core.db import get_engine, new_session
    from core.etags import etag_of
    from core.models import ApiKey
    from core.orgs.apikeys import hash_key
    from core.settings import Settings
    from core.vocab import KeyScope

    settings = Settings(database_url=url, secret_key=SECRET)
    rng = random.Random(1)

    def body(payload) -> None:
        etag_of(json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False).encode())

    def call(kind: str) -> None:
        session = new_session(url)  # the API's engine options (core.db.get_engine)
        try:
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key, SECRET)))
            caller = Caller(row.id, row.org_id, KeyScope(row.scope))
            service = JobService(session, settings)
            job_id = rng.choice(job_ids)
            if kind == "job":
                body(service.present(service.get(caller, job_id)))
            else:
                events, more = service.events(caller, job_id, after=None, limit=events_limit, order="desc")
                body(CursorPage[JobEventOut](**page(events, more)))
        finally:
            session.close()

    out = {}
    for kind in ("job", "events"):
        for _ in range(30):
            call(kind)
        start = time.process_time()
        for _ in range(n):
            call(kind)
        out[f"{kind}_cpu_ms"] = (time.process_time() - start) / n * 1000
    get_engine(url).dispose()
    return out


# -- load --------------------------------------------------------------------------------------------
@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    body_bytes: int = 0


Request = Callable[[random.Random], tuple[str, dict[str, str], int]]


async def run_phase(client, make: Request, *, concurrency: int, seconds: float, seed_: int) -> tuple[Tally, float]:
    """``concurrency`` loops sending requests until ``seconds`` have passed; each loop stops by
    itself at the deadline (an in-flight request is allowed to finish)."""
    tally = Tally()
    start = time.perf_counter()
    deadline = start + seconds

    async def loop(i: int) -> None:
        rng = random.Random(seed_ * 1_000 + i)
        while time.perf_counter() < deadline:
            path, headers, expected = make(rng)
            t = time.perf_counter()
            try:
                r = await client.get(path, headers=headers)
            except Exception as exc:  # counted, reported; the loop goes on until the deadline
                tally.errors[type(exc).__name__] += 1
                continue
            tally.latencies.append(time.perf_counter() - t)
            tally.statuses[r.status_code] += 1
            tally.body_bytes += len(r.content)
            if r.status_code != expected:
                tally.errors[f"HTTP {r.status_code}"] += 1

    await asyncio.wait_for(asyncio.gather(*(loop(i) for i in range(concurrency))), timeout=seconds + 120)
    return tally, time.perf_counter() - start


async def fetch_etags(client, paths: list[str], concurrency: int) -> dict[str, str]:
    sem = asyncio.Semaphore(concurrency)
    tags: dict[str, str] = {}

    async def one(path: str) -> None:
        async with sem:
            r = await client.get(path)
            r.raise_for_status()
            tags[path] = r.headers["etag"]

    await asyncio.gather(*(one(p) for p in paths))
    return tags


async def drive(
    base_url: str, key: str, job_ids: list[str], args: argparse.Namespace, server_pid: int, db_name: str | None
) -> dict[str, Any]:
    """Run the phases; ``db_name`` is the scratch Postgres database (None on SQLite)."""
    import httpx

    # Idle connections expire before the server's 5 s keep-alive closes them (no close race).
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency, keepalive_expiry=2
    )
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as client:
        polled = job_ids[:1] if args.one_job else job_ids
        job_paths = [f"/v1/fine_tuning/jobs/{j}" for j in polled]
        event_paths = [f"/v1/fine_tuning/jobs/{j}/events?limit={args.events_limit}" for j in polled]
        t = time.perf_counter()
        etags = await fetch_etags(client, job_paths + event_paths, args.concurrency)
        print(f"  fetched {len(etags)} ETags in {time.perf_counter() - t:.1f} s (also warms the server)", flush=True)

        def plain(paths: list[str]) -> Request:
            return lambda rng: (rng.choice(paths), {}, 200)

        def conditional(paths: list[str]) -> Request:
            def make(rng: random.Random) -> tuple[str, dict[str, str], int]:
                p = rng.choice(paths)
                return p, {"If-None-Match": etags[p]}, 304

            return make

        requests: dict[str, Request] = {
            "healthz": plain(["/healthz"]),
            "healthz_2": plain(["/healthz"]),
            "job": plain(job_paths),
            "job_304": conditional(job_paths),
            "events": plain(event_paths),
            "events_304": conditional(event_paths),
        }
        results: dict[str, Any] = {}
        for i, name in enumerate(args.phases):
            make = requests[name]
            await run_phase(client, make, concurrency=args.concurrency, seconds=args.warmup, seed_=args.seed + 100 + i)
            metrics_before = server_latency((await client.get("/metrics")).text)
            sessions_before = pg_sessions(args.pg_admin_url, db_name) if db_name else None
            cpu_pg = postgres_cpu_s() if db_name else None
            cpu_server, cpu_client = proc_cpu_s(server_pid), time.process_time()
            tally, elapsed = await run_phase(
                client, make, concurrency=args.concurrency, seconds=args.duration, seed_=args.seed + i
            )
            cpu_server = proc_cpu_s(server_pid) - cpu_server
            cpu_client = time.process_time() - cpu_client
            pg_after = postgres_cpu_s() if db_name else None
            cpu_pg = None if cpu_pg is None or pg_after is None else pg_after - cpu_pg
            metrics_after = server_latency((await client.get("/metrics")).text)
            await asyncio.sleep(1.0)  # Postgres flushes its statistics about once a second
            sessions_after = pg_sessions(args.pg_admin_url, db_name) if db_name else None
            n = len(tally.latencies)
            route = ROUTE_OF[name]
            s0, c0 = route_metric(metrics_before, route)
            s1, c1 = route_metric(metrics_after, route)
            lat_ms = [x * 1000 for x in tally.latencies]
            results[name] = {
                "path": route,
                "requests": n,
                "seconds": elapsed,
                "requests_per_s": n / elapsed,
                "p50_ms": percentile(lat_ms, 50),
                "p90_ms": percentile(lat_ms, 90),
                "p99_ms": percentile(lat_ms, 99),
                "mean_ms": sum(lat_ms) / n if n else None,
                "max_ms": max(lat_ms) if lat_ms else None,
                "server_mean_ms": (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else None,
                "server_cpu_ms_per_request": cpu_server / n * 1000 if n else None,
                "postgres_cpu_ms_per_request": cpu_pg / n * 1000 if n and cpu_pg is not None else None,
                # What one API process could serve with a core of its own (its CPU is the limit):
                "api_cpu_bound_requests_per_s": n / cpu_server if cpu_server > 0 else None,
                "client_cpu_ms_per_request": cpu_client / n * 1000 if n else None,
                "new_pg_sessions": None
                if sessions_before is None or sessions_after is None
                else sessions_after - sessions_before,
                "mean_body_bytes": tally.body_bytes / n if n else None,
                "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
                "errors": dict(tally.errors),
            }
            r = results[name]
            print(
                f"  {name:10s} {r['requests_per_s']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                f"server CPU {r['server_cpu_ms_per_request']:.2f} ms/req  statuses {r['statuses']}"
                + (f"  errors {r['errors']}" if r["errors"] else ""),
                flush=True,
            )
    return results
