"""``guardtune``: the service commands (serve, worker, infer, migrate) and the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.jobs.pipeline import DEFAULT_QUEUE, GPU_QUEUE, REAPER_QUEUE
from core.settings import get_settings

app = typer.Typer(help="guardtune service commands.", no_args_is_help=True, add_completion=False)
ALL_QUEUES = f"{DEFAULT_QUEUE},{GPU_QUEUE}"  # a worker's default: every stage's queue


def worker_argv(
    queues: str = ALL_QUEUES, concurrency: int = 1, loglevel: str | None = None, with_beat: bool = True
) -> list[str]:
    """The Celery worker command line: one task at a time, prefetch 1, at ``loglevel`` (default
    ``GUARDTUNE_LOG_LEVEL``); ``with_beat`` also runs the periodic stale-job reaper's schedule
    in this worker (run it in one worker only), which then consumes the reaper's queue too
    (production runs it as a worker of that queue alone: compose's ``reaper`` service)."""
    beat = ["--beat"] if with_beat else []
    if with_beat and REAPER_QUEUE not in queues.split(","):
        queues = f"{queues},{REAPER_QUEUE}"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app:celery_app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel or get_settings().log_level,
        "--without-gossip",
        "--without-mingle",
        *beat,
    ]


def worker_env() -> dict[str, str]:
    """A worker process's environment: this one's, in prometheus_client's multiprocess mode
    when the worker serves metrics (``GUARDTUNE_WORKER_METRICS_PORT``: :mod:`worker.metrics`)."""
    settings = get_settings()
    env = os.environ.copy()
    if settings.worker_metrics_port is not None:
        from worker.metrics import multiprocess_env

        env.update(multiprocess_env(settings.home_dir, settings.worker_metrics_port))
    return env


def infer_argv() -> list[str]:
    """The embedded inference process (``guardtune infer``)."""
    return [sys.executable, "-m", "cli.guardtune", "infer"]


def stop_child(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@app.command()
def migrate(revision: str = "head") -> None:
    """Upgrade the database schema (``alembic upgrade``) and seed the base-model registry."""
    from core.db import session_scope
    from core.registry import seed_base_models
    from migrations import migrate as migrations

    settings = get_settings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.db_url, revision)
    with session_scope() as session:
        seed_base_models(session, settings)
    typer.echo(f"database at {revision}: {settings.db_url}")


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default GUARDTUNE_HOST)."),
    port: int = typer.Option(None, help="Port (default GUARDTUNE_PORT)."),
    migrate_first: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the schema on start."),
) -> None:
    """Start the API; on the embedded broker also a worker beside it, and with the embedded
    inference backend a ``guardtune infer`` process."""
    from api import server

    settings = get_settings()
    if migrate_first:
        migrate("head")
    # uvicorn re-raises SIGTERM after its shutdown; turn it into SystemExit so the
    # embedded worker below is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children: list[subprocess.Popen] = []
    if settings.run_embedded_worker:
        children.append(subprocess.Popen(worker_argv(), env=worker_env()))
        typer.echo(f"embedded worker started (pid {children[-1].pid})")
    if settings.run_embedded_infer:
        children.append(subprocess.Popen(infer_argv(), env=os.environ.copy()))
        typer.echo(f"embedded inference started (pid {children[-1].pid}) at {settings.inference}")
    try:
        server.run(host, port)
    finally:
        for child in children:
            stop_child(child)


@app.command()
def worker(
    queues: str = typer.Option(ALL_QUEUES, help="Comma-separated queues to consume."),
    concurrency: int = typer.Option(1, help="Processes; keep 1 per GPU."),
    beat: bool = typer.Option(True, "--beat/--no-beat", help="Also run the periodic reaper (in one worker only)."),
) -> None:
    """Start a Celery worker alone (production: one per GPU)."""
    settings = get_settings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    argv = worker_argv(queues, concurrency, settings.log_level, beat)
    os.execve(argv[0], argv, worker_env())


@app.command()
def infer() -> None:
    """Start the embedded inference backend (transformers + PEFT) on GUARDTUNE_INFER_HOST:PORT."""
    from worker.inference_server import serve as serve_inference

    get_settings().home_dir.mkdir(parents=True, exist_ok=True)
    serve_inference()


@app.command()
def demo(
    epochs: int | None = typer.Option(None, help="Training epochs of the demo jobs (default: 3)."),
    keep_serving: bool = typer.Option(True, "--serve/--no-serve", help="Leave the server running afterwards."),
    lr_multiplier: float | None = typer.Option(
        None, "--learning-rate-multiplier", help="learning_rate_multiplier of the demo jobs (default: 5, i.e. 1e-3)."
    ),
    report: Annotated[Path | None, typer.Option(help="Also write the outcome as JSON to this file.")] = None,
) -> None:
    """Fine-tune the aligned default model on a file with planted harmful lines, adaptive and
    standard SFT, end to end on the embedded stack (see README)."""
    from cli.demo import DEMO_EPOCHS, DEMO_LR_MULTIPLIER, run_demo

    raise typer.Exit(
        run_demo(
            keep_serving=keep_serving,
            report_path=report,
            epochs=DEMO_EPOCHS if epochs is None else epochs,
            lr_multiplier=DEMO_LR_MULTIPLIER if lr_multiplier is None else lr_multiplier,
        )
    )


if __name__ == "__main__":
    app()
