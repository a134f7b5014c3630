"""The worker's Celery app: the shared configuration plus the task modules."""

from core.logging import configure_logging
from core.queue import make_celery
from core.settings import get_settings

configure_logging()
celery_app = make_celery(include=("worker.tasks",))
celery_app.conf.beat_schedule_filename = str(get_settings().home_dir / "celerybeat-schedule")
