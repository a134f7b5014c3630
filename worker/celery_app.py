"""The worker's Celery app: the shared configuration plus the task modules."""

from core.logging import configure_logging
from core.queue import make_celery

configure_logging()
celery_app = make_celery(include=("worker.tasks",))
