"""The report of a load run: ratios of every phase to ``/healthz``, the per-database
tables printed, the summary, and ``bench/results/api_load.json`` (runs kept side by side
under their labels).

Contracts: the result file's format is unchanged by a run (``server``, ``client``,
``versions``, ``note``, ``runs.<label>`` with ``api_commit``, ``settings``, ``summary``,
``databases``); a run replaces only its own label.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import REPO, print_table, ratio, write_result

RESULT_NAME = "api_load"


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


def print_database(db: str, results: dict[str, Any], ratios: dict[str, Any], errors: list[str]) -> None:
    """The tables of one database's phases and their ratios to ``/healthz``; the first API error line."""
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


def write_run(args: argparse.Namespace, databases: dict[str, Any], result: dict[str, Any]) -> None:
    """Write this run under ``runs.<--label>`` of the result file, keeping the other labels' runs."""
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
