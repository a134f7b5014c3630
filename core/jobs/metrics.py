"""Prometheus families read from the database at each scrape (the API's ``GET /metrics``
registers :class:`PipelineCollector`): jobs by status, and per pipeline queue the messages
waiting (due and not yet taken by a worker: :func:`core.outbox.backlog`) and how long the
oldest of them has waited. Read from the database, they are the same whichever API process
answers, and a worker that is down cannot hide its backlog."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core import outbox
from core.db import session_scope
from core.jobs.pipeline import DEFAULT_QUEUE, GPU_QUEUE
from core.jobs.vocab import JobStatus
from core.models import Job

JOBS = "guardtune_jobs"
QUEUE_DEPTH = "guardtune_queue_depth"
QUEUE_OLDEST_WAIT = "guardtune_queue_oldest_wait_seconds"
PIPELINE_QUEUES = (DEFAULT_QUEUE, GPU_QUEUE)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    """Jobs by status, queue depth, oldest wait: empty."""
    return (
        GaugeMetricFamily(JOBS, "Fine-tuning jobs by status", labels=["status"]),
        GaugeMetricFamily(QUEUE_DEPTH, "Pipeline messages due and not yet taken by a worker", labels=["queue"]),
        GaugeMetricFamily(
            QUEUE_OLDEST_WAIT, "How long the oldest waiting pipeline message has waited (0: none)", labels=["queue"]
        ),
    )


class PipelineCollector(Collector):
    """Jobs by status and the pipeline queues' backlog, queried on each collect."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        at = time.time()
        with session_scope() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).tuples().all())
            backlog = outbox.backlog(session, PIPELINE_QUEUES, at)
        jobs, depth, oldest = _families()
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        for queue, waiting in backlog.items():
            depth.add_metric([queue], waiting.waiting)
            oldest.add_metric([queue], 0.0 if waiting.oldest_due is None else max(0.0, at - waiting.oldest_due))
        yield from (jobs, depth, oldest)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without values (registering queries nothing)."""
        yield from _families()
