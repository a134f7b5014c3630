"""The Celery configuration, shared by producers (the API) and workers.

JSON only; one task at a time per worker process on the ``gpu`` queue; a task is acknowledged after it finishes and is redelivered
if its worker dies (acks late + reject on worker lost)."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from kombu import Queue

from core.settings import Settings, get_settings

DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"

# The task that (re)runs the stage a job is in (its ``stage`` column), and its queue; the
# worker registers these names (``worker/tasks.py``). Resuming a paused job sends one.
STAGE_TASKS = {
    "scanning": ("guardtune.pipeline.scan", GPU_QUEUE),
    "training": ("guardtune.pipeline.train", GPU_QUEUE),
    "evaluating": ("guardtune.pipeline.evaluate", GPU_QUEUE),
    "gating": ("guardtune.pipeline.gate", DEFAULT_QUEUE),
}


def make_celery(settings: Settings | None = None, include: tuple[str, ...] = ()) -> Celery:
    """A configured Celery app; workers pass ``include`` to register their tasks."""
    settings = settings or get_settings()
    if settings.broker_is_embedded:
        settings.home_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("guardtune", broker=settings.broker, backend=settings.result_backend, include=list(include))
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=(Queue(DEFAULT_QUEUE), Queue(GPU_QUEUE)),
        task_default_queue=DEFAULT_QUEUE,
        task_routes={"guardtune.gpu.*": {"queue": GPU_QUEUE}},
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if not settings.broker_is_embedded:
        # Redis redelivers an unacknowledged task after the visibility timeout: long
        # enough that a training task still running is not handed to a second worker.
        app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    return app


@lru_cache
def producer() -> Celery:
    """The app a producer (the API) sends tasks with, by name: no task code imported."""
    return make_celery()


def enqueue(task_name: str, *args: object, queue: str = DEFAULT_QUEUE, ignore_result: bool = False) -> str:
    """Send a task by name; returns its id. Call only after the database commit.

    ``ignore_result=True`` for fire-and-forget tasks whose outcome lives in the database:
    the producer then never subscribes to the result backend (with the broker down, a send
    fails in about a second instead of ~20 s of result-backend reconnects)."""
    return producer().send_task(task_name, args=list(args), queue=queue, ignore_result=ignore_result).id


def check_broker(timeout_s: float = 3.0) -> None:
    """Raise if the broker cannot be reached within ``timeout_s``."""
    with producer().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
