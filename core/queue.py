"""The Celery configuration, shared by producers (the API) and workers.

JSON only; one task at a time per worker process on the ``gpu`` queue; a task is acknowledged after it finishes and is redelivered
if its worker dies (acks late + reject on worker lost). The queue names and the pipeline's
tasks are declared in :mod:`core.jobs.pipeline`."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING

from celery import Celery
from kombu import Queue

from core.jobs.pipeline import DEFAULT_QUEUE, EXPIRE_TASK, GPU_QUEUE, REAP_TASK, REAPER_QUEUE, SWEEP_TASK
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from kombu.transport import redis as redis_transport
    from kombu.transport import sqlalchemy as sqlalchemy_transport

EMBEDDED_BROKER_LOCK_WAIT_S = 120.0


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
        task_queues=(Queue(DEFAULT_QUEUE), Queue(GPU_QUEUE), Queue(REAPER_QUEUE)),
        task_default_queue=DEFAULT_QUEUE,
        task_routes={
            "guardtune.gpu.*": {"queue": GPU_QUEUE},
            REAP_TASK: {"queue": REAPER_QUEUE},
            SWEEP_TASK: {"queue": REAPER_QUEUE},
            EXPIRE_TASK: {"queue": REAPER_QUEUE},
        },
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if settings.broker_is_sqlite:
        # One SQLite file that every worker poll locks (BEGIN IMMEDIATE): on a loaded machine a
        # send can wait seconds for the lock. SQLite's default 5 s wait then fails the send, and
        # kombu's publish retry breaks on the channel it closed: wait for the lock instead.
        app.conf.broker_transport_options = {"connect_args": {"timeout": EMBEDDED_BROKER_LOCK_WAIT_S}}
    elif not settings.broker_is_embedded:
        # Redis redelivers an unacknowledged task after the visibility timeout: long
        # enough that a training task still running is not handed to a second worker.
        app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    return app


@lru_cache
def producer() -> Celery:
    """The app a producer (the API) sends tasks with, by name: no task code imported."""
    return make_celery()


def enqueue(
    task_name: str, *args: object, queue: str = DEFAULT_QUEUE, ignore_result: bool = False, task_id: str | None = None
) -> str:
    """Send a task by name; returns its id. Call only after the database commit
    (pipeline tasks go through :mod:`core.outbox`, which passes its row id as ``task_id``).

    ``ignore_result=True`` for fire-and-forget tasks whose outcome lives in the database:
    the producer then never subscribes to the result backend (with the broker down, a send
    fails in about a second instead of ~20 s of result-backend reconnects)."""
    result = producer().send_task(task_name, args=list(args), queue=queue, ignore_result=ignore_result, task_id=task_id)
    sent_id: str = result.id
    return sent_id


def broker_message_ids(
    queues: tuple[str, ...] = (DEFAULT_QUEUE, GPU_QUEUE), delivered_within_s: float | None = None
) -> set[str]:
    """The ids of the task messages the broker still holds for ``queues``: waiting in a
    queue (at any age), or delivered to a worker and not yet acknowledged. Raises if the
    broker cannot be read (then nobody can tell a waiting message from a lost one).

    ``delivered_within_s`` (Redis): a delivered message counts only if it was delivered
    within that many seconds (kombu's ``unacked_index`` sorted set holds each delivery's
    time, by the delivering worker's clock). The reaper passes its stale timeout: a worker
    reserves a message only for an idle process (prefetch 1, acks late) and consumes its
    outbox row as the task starts, so a message delivered longer ago whose row is still
    unconsumed belongs to a worker that died in between, and Redis would hand it out again
    only after the visibility timeout. The embedded (SQLAlchemy) broker does not say who
    holds a delivered message or since when: its delivered messages never count."""
    with producer().connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        channel = conn.default_channel
        if conn.transport_cls in ("redis", "rediss") or hasattr(channel, "unacked_key"):
            delivered_after = None if delivered_within_s is None else time.time() - delivered_within_s
            payloads = _redis_payloads(channel, queues, delivered_after)
        elif hasattr(channel, "message_cls"):  # kombu's SQLAlchemy transport (the embedded broker)
            payloads = _sqla_payloads(channel, queues)
        else:
            raise NotImplementedError(f"cannot list the messages of a {conn.transport_cls!r} broker")
        return {message_id for message_id in map(_message_id, payloads) if message_id}


def _redis_payloads(
    channel: redis_transport.Channel, queues: tuple[str, ...], delivered_after: float | None
) -> list[str]:
    client = channel.client
    payloads: list[str] = []
    for queue in queues:
        for step in channel.priority_steps:
            payloads += client.lrange(channel._q_for_pri(queue, step), 0, -1)
    with client.pipeline() as pipe:  # MULTI/EXEC: the hash and its index as of one moment
        unacked, index = (
            pipe.hgetall(channel.unacked_key).zrange(channel.unacked_index_key, 0, -1, withscores=True).execute()
        )
    delivered_at = dict(index)  # delivery tag -> time delivered
    for tag, value in unacked.items():  # value: [payload, exchange, routing key]
        when = delivered_at.get(tag)
        if delivered_after is None or when is None or when >= delivered_after:
            payloads.append(json.dumps(json.loads(value)[0]))
    return payloads


def _sqla_payloads(channel: sqlalchemy_transport.Channel, queues: tuple[str, ...]) -> list[str]:
    # Delivered messages stay in the table with visible = False; only visible ones wait.
    # (A worker of this transport holds a delivered message in memory, nowhere readable.)
    session, message, queue = channel.session, channel.message_cls, channel.queue_cls
    rows = (
        session.query(message.payload)
        .join(queue, message.queue_id == queue.id)
        .filter(queue.name.in_(queues), message.visible.is_(True))
        .all()
    )
    session.commit()
    return [row.payload for row in rows]


def _message_id(payload: str | bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (TypeError, ValueError):
        return None
    message_id: str | None = (data.get("headers") or {}).get("id") or (data.get("properties") or {}).get(
        "correlation_id"
    )
    return message_id


def check_broker(timeout_s: float = 3.0) -> None:
    """Raise if the broker cannot be reached within ``timeout_s``."""
    with producer().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
