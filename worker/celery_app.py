"""The worker's Celery app: the shared configuration plus the task modules.

Celery's own log lines (the worker's banner, task received / succeeded) go through the
app's structured logging (:func:`core.logging.configure_logging`: JSON lines with
``GUARDTUNE_LOG_JSON``) instead of Celery's format; with ``GUARDTUNE_WORKER_METRICS_PORT``
the worker's main process serves the metrics of all its processes (:mod:`worker.metrics`)."""

from celery.signals import setup_logging, worker_init

from core.logging import configure_logging
from core.queue import make_celery
from core.settings import get_settings

configure_logging()
celery_app = make_celery(include=("worker.tasks",))
celery_app.conf.beat_schedule_filename = str(get_settings().home_dir / "celerybeat-schedule")


@setup_logging.connect
def _structured_logging(**_: object) -> None:
    """Connected, this receiver replaces Celery's logging setup with the app's."""
    configure_logging()


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    port = get_settings().worker_metrics_port
    if port is not None:
        from worker.metrics import serve

        serve(port)
