"""Job-status polling load on the API, on Postgres and on SQLite, against a trivial endpoint
of the same app in the same run.

What it does, per database (``--db postgres|sqlite|both``):

1. creates a scratch database (a Postgres database, or a SQLite file), migrates it
   (``migrations.migrate.upgrade``) and inserts, in bulk through SQLAlchemy, one organization, one
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

Modules: :mod:`bench.load.fixtures` (1.), :mod:`bench.load.server` (2. and the counters),
:mod:`bench.load.phases` (3.), :mod:`bench.load.report` (4. and the result file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO
from bench.load.fixtures import create_database, drop_database, seed
from bench.load.phases import PHASES, drive, in_process_cost
from bench.load.report import add_ratios, print_database, summary, write_run
from bench.load.server import export_tree, start_api, stop
from core.waiting import wait_http


def run_database(db: str, args: argparse.Namespace, tree: Path) -> dict[str, Any]:
    """Set up a scratch database of kind ``db``, serve it with the API of ``tree``, drive the
    phases; the database is dropped afterwards."""
    from migrations import migrate

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
                wait_http(f"{base_url}/healthz", 60, proc)
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
    print_database(db, results, ratios, errors)
    return {"endpoints": results, "ratios": ratios, "in_process_cpu_ms": direct, "api_error_lines": len(errors)}


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
        write_run(args, databases, result)
