"""Job-status polling load on the API, on Postgres and on SQLite, against a trivial endpoint
of the same app in the same run.

What it does, per database (``--db postgres|sqlite|both``):

1. creates a scratch database (a Postgres database, or a SQLite file), migrates it
   (``core.migrate.upgrade``) and inserts, in bulk through SQLAlchemy, one organization, one
   API key, one training file and ``--jobs`` jobs (a mix of running / succeeded / failed, each
   with a safety report) with ``--events-per-job`` events each;
2. starts the API in a subprocess the way its source tree starts it (``python -m api.server``:
   one process, the API's own limits; uvicorn's command line for trees before that existed),
   ``GUARDTUNE_ENV=production``, on 127.0.0.1;
3. drives it with one async httpx client holding ``--concurrency`` (256) keep-alive
   connections, ``--concurrency`` request loops, all on one job (``--one-job``, the default)
   and each stopping by itself at the phase deadline: ``--warmup`` seconds untimed, then
   ``--duration`` (60) seconds timed, per phase (``--phases``, default healthz,job,job_304):

   ==============  =====================================================================
   ``healthz``     ``GET /healthz``: the baseline (same app, middleware and thread pool)
   ``job``         ``GET /v1/fine_tuning/jobs/{id}``
   ``job_304``     the same with ``If-None-Match: <its ETag>`` → 304 (a dashboard's poll)
   ``events``      ``GET /v1/fine_tuning/jobs/{id}/events?limit=20``
   ``events_304``  the same with ``If-None-Match`` → 304
   ``healthz_2``   ``GET /healthz`` again, to show drift over the run
   ==============  =====================================================================

4. reports per phase: requests/s, errors (exceptions and unexpected statuses), p50/p99/mean
   latency seen by the client, the server's own mean time per request (its ``/metrics``
   histogram), CPU time per request of the API process, of Postgres (all local Postgres
   processes) and of the load generator, new Postgres sessions (``pg_stat_database``), and the
   ratio of each to ``/healthz``.

``--server-commit SHA`` serves the API of an older commit (``git archive``) on the same
schema and load: the "before" of a change. Runs are kept in ``bench/results/api_load.json``
under ``runs.<--label>`` (``after`` by default), so a before and an after sit side by side.

The load generator, the API and the database share the same (2, here) CPU cores: the
requests/s are what one API process delivers while competing with its own client, not its
capacity on a dedicated machine; the ratios to ``/healthz`` in the same run are the steadier
numbers.

    python bench/api_load.py                                  # after: both databases, ~8 min
    python bench/api_load.py --server-commit a4a4565 --label before --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, percentile, print_table, ratio, write_result  # noqa: E402

RESULT_NAME = "api_load"
PHASES = ("healthz", "job", "job_304", "events", "events_304", "healthz_2")
SECRET = "bench-secret-" + "x" * 40
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
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- scratch database ------------------------------------------------------------------------------
def _admin(admin_url: str):
    import psycopg

    return psycopg.connect(
        admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=5
    )


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"gt_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    with _admin(admin_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def pg_sessions(admin_url: str, name: str) -> int | None:
    """Sessions ever opened to database ``name`` (``pg_stat_database.sessions``, PG 14+)."""
    try:
        with _admin(admin_url) as conn:
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
            return int(row[0]) if row and row[0] is not None else None
    except Exception:  # older servers have no such column: the number is optional
        return None


def seed(url: str, n_jobs: int, n_events: int, seed_: int) -> tuple[str, list[str]]:
    """Insert the org, key, file, jobs, reports and events; return (API key, job ids)."""
    from sqlalchemy import create_engine, insert, text
    from sqlalchemy.orm import Session

    from core.apikeys import generate_key
    from core.ids import new_id
    from core.jobs import ErrorCode, Hyperparameters, JobStage, JobStatus, SafetyConfig
    from core.models import ApiKey, File, Job, JobEvent, Organization, SafetyReport

    rng = random.Random(seed_)
    engine = create_engine(url)
    t0 = int(time.time()) - 86_400
    org_id, file_id = new_id("org"), new_id("file")
    plaintext, prefix, digest = generate_key(SECRET)
    job_ids = [new_id("ftjob") for _ in range(n_jobs)]
    hp = Hyperparameters().model_dump()
    safety = SafetyConfig().model_dump(include={"mode", "estimator", "kl_weight", "constant_kl_weight"})
    jobs, reports, events = [], [], []
    for j, job_id in enumerate(job_ids):
        status = rng.choices([JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED], weights=[6, 3, 1])[0]
        created = t0 + j * 60
        finished = None if status == JobStatus.RUNNING else created + 3_600
        jobs.append(
            {
                "id": job_id,
                "seq": 10**15 + j,
                "org_id": org_id,
                "created_by": "key-bench",
                "model": "smollm2-135m-instruct",
                "training_file_id": file_id,
                "status": status.value,
                "stage": JobStage.TRAINING.value if status == JobStatus.RUNNING else None,
                "hyperparameters": hp,
                "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
                "safety": safety,
                "suffix": f"bench-{j}",
                "seed": j,
                "metadata_": {"team": "bench", "run": str(j)},
                "error": {
                    "code": ErrorCode.SAFETY_GATE_BLOCKED.value,
                    "message": "ASR rose from 2.0% to 40.0% (allowed: +5 points)",
                    "param": None,
                }
                if status == JobStatus.FAILED
                else None,
                "fine_tuned_model": f"ft:smollm2-135m-instruct:{org_id}:bench-{j}:{job_id}"
                if status == JobStatus.SUCCEEDED
                else None,
                "trained_tokens": 120_000 if finished else None,
                "estimated_finish": created + 3_600,
                "result_files": [],
                "attempts": 1,
                "heartbeat_at": float(created + 1_800),
                "worker_id": "bench-worker",
                "created_at": created,
                "started_at": created + 5,
                "finished_at": finished,
            }
        )
        reports.append(
            {
                "job_id": job_id,
                "updated_at": created + 600,
                "scan": {
                    "n": 48,
                    "counts_by_score": {"1": 40, "2": 0, "3": 0, "4": 0, "5": 8},
                    "n_flagged": 8,
                    "flagged_fraction": 0.167,
                    "mean_risk": 1.67,
                    "counts_by_category": {"malware": 3, "fraud/deception": 5},
                    "top_flagged": [
                        {
                            "line": k,
                            "risk": 5.0,
                            "p_harmful": 0.97,
                            "judge_score": None,
                            "category_guess": "malware",
                            "flagged": True,
                        }
                        for k in range(1, 6)
                    ],
                },
                "training": {"mean_risk": 1.67, "regularized_share": 0.3, "final_kl": 0.021, "steps": 18},
                "evaluation": {
                    "base": {"asr_keyword": 0.02, "over_refusal": 0.1},
                    "tuned": {"asr_keyword": 0.03, "over_refusal": 0.1},
                }
                if finished
                else None,
                "gate": {"released": status == JobStatus.SUCCEEDED, "reasons": []} if finished else None,
            }
        )
        for e in range(n_events):
            at = created + 5 + e * 10
            if e % 10 == 0:
                events.append(
                    {
                        "id": new_id("ftevent"),
                        "job_id": job_id,
                        "created_at": at,
                        "level": "info",
                        "type": "message",
                        "message": f"Stage update {e // 10}",
                        "data": {"stage": JobStage.TRAINING.value},
                    }
                )
            else:
                step = e
                events.append(
                    {
                        "id": new_id("ftevent"),
                        "job_id": job_id,
                        "created_at": at,
                        "level": "info",
                        "type": "metrics",
                        "message": f"Step {step}/{n_events}: training loss=1.2345, kl=0.0123, kl_weight=0.90, risk=5.00",
                        "data": {
                            "step": step,
                            "total_steps": n_events,
                            "train_loss": 1.2345,
                            "sft_loss": 1.3,
                            "kl": 0.0123,
                            "kl_weight": 0.9,
                            "sft_weight": 0.1,
                            "risk": 5.0,
                            "tokens_per_s": 512.3,
                            "learning_rate": 0.0002,
                        },
                    }
                )
    with Session(engine) as session, session.begin():
        session.add(Organization(id=org_id, name="bench-org"))
        session.flush()
        session.add(ApiKey(id=new_id("key"), org_id=org_id, prefix=prefix, key_hash=digest, scope="customer"))
        session.add(
            File(
                id=file_id,
                org_id=org_id,
                filename="train.jsonl",
                purpose="fine-tune",
                storage_key=f"orgs/{org_id}/files/{file_id}",
                status="processed",
                n_examples=48,
            )
        )
        session.flush()
        session.execute(insert(Job), jobs)
        session.execute(insert(SafetyReport), reports)
        for start in range(0, len(events), 10_000):
            session.execute(insert(JobEvent), events[start : start + 10_000])
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    return plaintext, job_ids


def in_process_cost(url: str, key: str, job_ids: list[str], events_limit: int, n: int = 300) -> dict[str, float]:
    """CPU ms per call of the work behind each poll, called directly in this process (one
    thread, no HTTP, no FastAPI): the key lookup, the service call with its queries, the
    presenter, the JSON body and its ETag — the database layer's share of a request."""
    import json

    from sqlalchemy import select

    from api.deps import Caller
    from api.etags import etag_of
    from api.jobs.schemas import JobEvent as JobEventOut
    from api.jobs.service import JobService
    from api.schemas import CursorPage, page
    from core.apikeys import hash_key
    from core.db import get_engine, new_session
    from core.models import ApiKey
    from core.settings import Settings

    settings = Settings(database_url=url, secret_key=SECRET)
    rng = random.Random(1)

    def body(payload) -> None:
        etag_of(json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False).encode())

    def call(kind: str) -> None:
        session = new_session(url)  # the API's engine options (core.db.get_engine)
        try:
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key, SECRET)))
            caller = Caller(row.id, row.org_id, row.scope)
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


# -- processes -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(url: str, home: Path, log_path: Path, tree: Path = REPO) -> tuple[subprocess.Popen, str]:
    """The API of source tree ``tree`` (this checkout, or an older commit's export), started
    the way that tree starts it: ``python -m api.server`` where it exists (the API's limits),
    else uvicorn's command line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDTUNE_")}
    env.update(
        {
            "GUARDTUNE_ENV": "production",
            "GUARDTUNE_DATABASE_URL": url,
            "GUARDTUNE_SECRET_KEY": SECRET,
            "GUARDTUNE_HOME": str(home),
            "GUARDTUNE_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(tree),
        }
    )
    if (tree / "api" / "server.py").exists():
        argv = [
            sys.executable,
            "-m",
            "api.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ]
    log = log_path.open("ab")
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def export_tree(commit: str, into: Path) -> Path:
    """The files of ``commit`` (``git archive``), to run an older API against the same load."""
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wait_ready(base_url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the API did not answer within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_s() -> float | None:
    """CPU seconds of all local Postgres processes, including exited backends (their time is
    in the postmaster's children totals). ``None`` when Postgres is not visible in /proc."""
    total, seen = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if not comm.startswith("postgres"):
            continue
        f = stat.rsplit(")", 1)[1].split()
        total += sum(int(x) for x in f[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
        seen = True
    return total if seen else None


_METRIC = re.compile(r'^guardtune_http_request_seconds_(sum|count)\{method="GET",route="([^"]+)"\} (\S+)$')


def server_latency(text: str) -> dict[str, tuple[float, float]]:
    """Per route: (sum of seconds, count) of the API's own request-latency histogram."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            out.setdefault(m.group(2), [0.0, 0.0])[0 if m.group(1) == "sum" else 1] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def _route_metric(metrics: dict[str, tuple[float, float]], route: str) -> tuple[float, float]:
    """The histogram of ``route``; the API labels routes of the ``/v1`` routers without the
    prefix (``/fine_tuning/jobs/...``), so both spellings are looked up."""
    return metrics.get(route) or metrics.get(route.removeprefix("/v1")) or (0.0, 0.0)


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
            s0, c0 = _route_metric(metrics_before, route)
            s1, c1 = _route_metric(metrics_after, route)
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


def add_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios of every phase to the mean of the healthz phases."""
    base = [results[k] for k in ("healthz", "healthz_2") if k in results]
    if not base:
        return {}

    def mean(key: str) -> float | None:
        vals = [b[key] for b in base if b.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    ref = {k: mean(k) for k in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "server_mean_ms")}
    ratios = {}
    for name, r in results.items():
        ratios[name] = {
            "requests_per_s": ratio(r["requests_per_s"], ref["requests_per_s"]),
            "p50_latency": ratio(r["p50_ms"], ref["p50_ms"]),
            "p99_latency": ratio(r["p99_ms"], ref["p99_ms"]),
            "server_cpu_per_request": ratio(r["server_cpu_ms_per_request"], ref["server_cpu_ms_per_request"]),
            "server_mean_time": ratio(r["server_mean_ms"], ref["server_mean_ms"]),
        }
    return {"baseline": "mean of the healthz phases", "baseline_values": ref, "per_endpoint": ratios}


def run_database(db: str, args: argparse.Namespace, tree: Path) -> dict[str, Any]:
    """Set up a scratch database of kind ``db``, serve it with the API of ``tree``, drive the
    phases; the database is dropped afterwards."""
    from core import migrate

    with tempfile.TemporaryDirectory(prefix="gt-bench-api-") as home:
        if db == "postgres":
            db_name, url = create_database(args.pg_admin_url)
        else:
            db_name, url = None, f"sqlite:///{Path(home) / 'bench.db'}"
        proc = None
        try:
            t = time.perf_counter()
            migrate.upgrade(url)  # this checkout's schema: an older API ignores the newer columns
            key, job_ids = seed(url, args.jobs, args.events_per_job, args.seed)
            print(f"  [{db}] migrated and seeded in {time.perf_counter() - t:.1f} s", flush=True)
            direct = in_process_cost(url, key, job_ids, args.events_limit) if tree == REPO else None
            log_path = Path(home) / "api.log"
            proc, base_url = start_api(url, Path(home), log_path, tree)
            try:
                wait_ready(base_url, proc)
                results = asyncio.run(drive(base_url, key, job_ids, args, proc.pid, db_name))
            except BaseException:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            finally:
                stop(proc)
            api_log = log_path.read_text(errors="replace")
        finally:
            if db_name and not args.keep_db:
                drop_database(args.pg_admin_url, db_name)
    ratios = add_ratios(results)
    errors = [line for line in api_log.splitlines() if '"level": "error"' in line or "Traceback" in line]
    print()
    print_table(
        [
            "endpoint",
            "req/s",
            "p50 ms",
            "p99 ms",
            "server ms",
            "API CPU ms/req",
            "req/s per API core",
            "PG CPU ms/req",
            "client CPU ms/req",
            "new PG sessions",
            "bytes",
            "errors",
        ],
        [
            [
                k,
                r["requests_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["server_mean_ms"],
                r["server_cpu_ms_per_request"],
                r["api_cpu_bound_requests_per_s"],
                r["postgres_cpu_ms_per_request"],
                r["client_cpu_ms_per_request"],
                r["new_pg_sessions"],
                r["mean_body_bytes"],
                sum(r["errors"].values()),
            ]
            for k, r in results.items()
        ],
        digits=2,
    )
    if ratios:
        print(f"\n[{db}] ratio to /healthz:")
        print_table(
            ["endpoint", "req/s", "p50 latency", "p99 latency", "API CPU/req", "server time"],
            [
                [
                    k,
                    v["requests_per_s"],
                    v["p50_latency"],
                    v["p99_latency"],
                    v["server_cpu_per_request"],
                    v["server_mean_time"],
                ]
                for k, v in ratios["per_endpoint"].items()
            ],
        )
    if errors:
        print(f"\n[{db}] the API logged {len(errors)} error lines; first: {errors[0][:300]}")
    return {"endpoints": results, "ratios": ratios, "in_process_cpu_ms": direct, "api_error_lines": len(errors)}


def summary(databases: dict[str, Any]) -> dict[str, Any]:
    """Per database: errors of every phase, and the poll phases' requests/s over /healthz's."""
    out = {}
    for db, run in databases.items():
        per = run["ratios"].get("per_endpoint", {})
        out[db] = {
            "errors": sum(sum(r["errors"].values()) for r in run["endpoints"].values()),
            **{
                f"{name}_vs_healthz": per[name]["requests_per_s"]
                for name in ("job", "job_304", "events", "events_304")
                if name in per
            },
        }
    return out


def merged_runs(label: str, run: dict[str, Any]) -> dict[str, Any]:
    """The runs already in the result file, with this one set under ``label``."""
    import json

    path = REPO / "bench" / "results" / f"{RESULT_NAME}.json"
    runs = {}
    if path.exists():
        runs = json.loads(path.read_text()).get("runs", {})
    return {**runs, label: run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--events-per-job", type=int, default=100)
    parser.add_argument(
        "--one-job",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="all pollers poll the same job (default), or random jobs",
    )
    parser.add_argument("--concurrency", type=int, default=256, help="concurrent connections / request loops")
    parser.add_argument("--duration", type=float, default=60.0, help="timed seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds per endpoint before it")
    parser.add_argument("--events-limit", type=int, default=20)
    parser.add_argument("--phases", default="healthz,job,job_304", help=f"subset/order of {', '.join(PHASES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-commit", help="serve the API of this commit (git archive) instead of the checkout")
    parser.add_argument("--label", default="after", help="where the run goes in the result file's runs")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("GUARDTUNE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the scratch Postgres database")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    args = parser.parse_args()
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if set(args.phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(set(args.phases) - set(PHASES))}")
    dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]

    print(
        f"api_load: {args.concurrency} concurrent pollers on {'one job' if args.one_job else 'random jobs'} "
        f"({args.jobs} jobs x {args.events_per_job} events seeded), {args.warmup:g} s warm-up + {args.duration:g} s "
        f"per phase, on {', '.join(dbs)}; API of {args.server_commit or 'this checkout'}. The load generator "
        f"shares the CPU cores ({os.cpu_count()}) with the API and the database.",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="gt-bench-tree-") as tmp:
        tree = export_tree(args.server_commit, Path(tmp)) if args.server_commit else REPO
        databases = {db: run_database(db, args, tree) for db in dbs}
    result = summary(databases)
    print(f"\nsummary: {result}")

    if not args.no_write:
        import httpx
        import uvicorn

        from bench.common import git_info

        run = {
            "api_commit": args.server_commit or git_info()["commit"],
            "settings": {
                k: getattr(args, k)
                for k in (
                    "jobs",
                    "events_per_job",
                    "one_job",
                    "concurrency",
                    "duration",
                    "warmup",
                    "events_limit",
                    "phases",
                    "seed",
                )
            },
            "summary": result,
            "databases": databases,
        }
        path = write_result(
            RESULT_NAME,
            {
                "server": "one API process (its own server command), GUARDTUNE_ENV=production; Postgres on 127.0.0.1 "
                "or SQLite in a temporary folder",
                "client": f"httpx {httpx.__version__} AsyncClient, same machine",
                "versions": {"uvicorn": uvicorn.__version__, "httpx": httpx.__version__},
                "note": "load generator, API and database share the machine's CPU cores; requests/s are noisy, ratios "
                "to /healthz in the same run less so",
                "runs": merged_runs(args.label, run),
            },
        )
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
