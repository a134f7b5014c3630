"""Webhooks end to end in this process (embedded stack): a job the gate blocks
sends ``fine_tuning.job.failed`` with the gate's verdict to a real local HTTP receiver, which
verifies it with the ``openai`` SDK's ``client.webhooks.unwrap()``; a receiver answering 500
gets the event again after the backoff (the reaper sends the retry), and every attempt is in
the endpoint's delivery log; attempts are bounded."""

from __future__ import annotations

import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI
from sqlalchemy import select

from core.webhooks.endpoints import new_secret
from tests.conftest import clear_caches
from tests.worker.conftest import create_job, demo_lines
from tests.worker.receiver import Received, receiver


def with_endpoint(org_id: str, url: str) -> tuple[str, str]:
    """The organization ``org_id`` (created) with one endpoint at ``url``: ``(id, secret)``."""
    from core.db import session_scope
    from core.models import Organization
    from core.webhooks.endpoints import WebhookService

    with session_scope() as session:
        session.add(Organization(id=org_id, name=org_id))
        session.flush()
        endpoint = WebhookService(session, org_id).create(url, actor="test")
        return endpoint.id, endpoint.secret


def unwrap(received: Received, secret: str):
    return OpenAI(api_key="unused").webhooks.unwrap(received.body, received.headers, secret=secret)


def live_row(job_id: str):
    from core import outbox
    from core.db import session_scope

    with session_scope() as session:
        return outbox.latest(session, job_id)


def log_of(org_id: str, endpoint_id: str) -> list[tuple[int, int | None, str | None, str]]:
    """The endpoint's delivery log, oldest first: ``(attempt, status code, error, delivery status)``."""
    from core.db import session_scope
    from core.webhooks.endpoints import WebhookService

    with session_scope() as session:
        rows, _ = WebhookService(session, org_id).attempts(endpoint_id)
        return [(a.attempt, a.status_code, a.error, d.status) for a, d in reversed(rows)]


def cancelled_job(org_id: str) -> str:
    """A job of ``org_id`` cancelled as the API cancels one (its terminal move queues the event)."""
    from core.db import session_scope
    from core.jobs.transitions import transition
    from core.jobs.vocab import JobStatus

    with session_scope() as session:
        job_id = create_job(session, org_id, demo_lines(4))
    with session_scope() as session:
        assert transition(session, job_id, JobStatus.CANCELLED, message="Fine-tuning job cancelled.")
    return job_id


def job_at_gate(org_id: str, tuned_asr: float) -> str:
    """A job of ``org_id`` about to run its gate stage: evaluated (base ASR 0, the fine-tuned
    model's ``tuned_asr``), its adapter stored."""
    from core.db import session_scope
    from core.models import SafetyReport
    from tests.worker.conftest import store_adapter

    side = {"asr_judge": None, "over_refusal": 0.0, "val_loss": None}
    evaluation = {"base": {**side, "asr_keyword": 0.0}, "tuned": {**side, "asr_keyword": tuned_asr}}
    with session_scope() as session:
        job_id = create_job(session, org_id, demo_lines(4), status="running", stage="evaluating")
        session.add(SafetyReport(job_id=job_id, evaluation=evaluation))
    store_adapter(org_id, job_id)
    return job_id


def test_a_blocked_job_sends_a_signed_failed_event(pipeline_env):
    from core.db import session_scope
    from core.jobs.pipeline import WEBHOOK_TASK
    from core.models import Job
    from worker.tasks import run_stage
    from worker.webhooks import deliver

    with receiver() as hook:
        endpoint_id, secret = with_endpoint("org-hooked", hook.url)
        job_id = job_at_gate("org-hooked", tuned_asr=0.75)
        assert run_stage("gate", job_id) is None
        with session_scope() as session:
            assert session.get_one(Job, job_id).error["code"] == "safety_gate_blocked"  # the API says failed
        row = live_row(job_id)
        assert (row.task, row.queue, row.consumed_at) == (WEBHOOK_TASK, "default", None)
        assert row.sent_at is not None  # sent after the gate's commit
        assert hook.received == []  # sent to the broker, not posted: that is the task's work
        assert deliver(job_id, row.id) == 1
        assert deliver(job_id, row.id) == 0  # a duplicate delivery of the row posts nothing
    [received] = hook.received
    event = unwrap(received, secret)
    assert event.type == "fine_tuning.job.failed"
    assert event.object == "event"
    assert event.id.startswith("evt_")
    assert received.headers["webhook-id"] == event.id
    assert event.data.id == job_id
    safety = event.data.model_extra["safety"]
    assert safety["decision"] == "blocked"
    assert safety["error_code"] == "safety_gate_blocked"
    assert any("ASR" in reason for reason in safety["reasons"])
    assert safety["asr"] == {"base": {"keyword": 0.0, "judge": None}, "fine_tuned": {"keyword": 0.75, "judge": None}}
    with pytest.raises(InvalidWebhookSignatureError):
        unwrap(received, new_secret())  # another endpoint's secret does not verify
    assert log_of("org-hooked", endpoint_id) == [(1, 200, None, "delivered")]
    assert live_row(job_id).consumed_at is not None  # nothing left to send


def test_a_failing_receiver_is_retried_after_the_backoff(pipeline_env, monkeypatch):
    from worker.pipeline.reaper import reap
    from worker.webhooks import deliver

    monkeypatch.setenv("GUARDTUNE_WEBHOOK_BACKOFF_S", "0.5")
    clear_caches()
    with receiver(answers=[500]) as hook:
        endpoint_id, secret = with_endpoint("org-retry", hook.url)
        job_id = cancelled_job("org-retry")
        assert deliver(job_id, live_row(job_id).id) == 1
        retry = live_row(job_id)
        assert retry.consumed_at is None
        assert retry.sent_at is None  # waits out its backoff
        assert retry.not_before is not None
        assert {"job_id": job_id, "action": "sent", "task": retry.task} not in reap()  # not due yet
        time.sleep(0.6)
        assert {"job_id": job_id, "action": "sent", "task": retry.task} in reap()
        assert deliver(job_id, retry.id) == 1
    first, second = hook.received
    assert unwrap(first, secret).id == unwrap(second, secret).id  # the same event, attempted twice
    assert unwrap(second, secret).type == "fine_tuning.job.cancelled"
    assert log_of("org-retry", endpoint_id) == [
        (1, 500, "HTTP 500: receiver says no", "delivered"),
        (2, 200, None, "delivered"),
    ]


def test_the_reaper_requeues_deliveries_whose_task_died(pipeline_env):
    """A delivery task that consumed its row and died before posting leaves the delivery
    pending with no live row: once that row is stale the reaper queues the task again."""
    from sqlalchemy import update

    from core.db import session_scope
    from core.models import OutboxMessage
    from worker.pipeline.reaper import reap
    from worker.webhooks import deliver

    with receiver() as hook:
        endpoint_id, _ = with_endpoint("org-died", hook.url)
        job_id = cancelled_job("org-died")
        died = live_row(job_id)
        with session_scope() as session:  # consumed by a worker that then died
            session.execute(update(OutboxMessage).where(OutboxMessage.id == died.id).values(consumed_at=time.time()))
        assert all(action["job_id"] != job_id for action in reap())  # maybe still posting
        with session_scope() as session:
            session.execute(
                update(OutboxMessage).where(OutboxMessage.id == died.id).values(consumed_at=time.time() - 3600)
            )
        assert {"job_id": job_id, "action": "requeued", "task": died.task} in reap()
        assert {"job_id": job_id, "action": "sent", "task": died.task} in reap()  # due at once
        again = live_row(job_id)
        assert again.id != died.id
        assert deliver(job_id, again.id) == 1
    assert len(hook.received) == 1
    assert log_of("org-died", endpoint_id) == [(1, 200, None, "delivered")]


def test_attempts_are_bounded(pipeline_env, monkeypatch):
    from core.db import session_scope
    from core.models import WebhookDelivery
    from worker.webhooks import deliver

    monkeypatch.setenv("GUARDTUNE_WEBHOOK_BACKOFF_S", "0")
    monkeypatch.setenv("GUARDTUNE_WEBHOOK_MAX_ATTEMPTS", "2")
    clear_caches()
    with receiver(answers=[503, 503, 503]) as hook:
        endpoint_id, _ = with_endpoint("org-down", hook.url)
        job_id = cancelled_job("org-down")
        assert deliver(job_id, live_row(job_id).id) == 1
        assert deliver(job_id, live_row(job_id).id) == 1
        assert live_row(job_id).consumed_at is not None  # given up: no retry queued
    assert len(hook.received) == 2
    assert [(a, code, status) for a, code, _, status in log_of("org-down", endpoint_id)] == [
        (1, 503, "failed"),
        (2, 503, "failed"),
    ]
    with session_scope() as session:
        assert session.scalar(select(WebhookDelivery.status).where(WebhookDelivery.job_id == job_id)) == "failed"


def test_an_unreachable_receiver_is_logged_without_a_status(pipeline_env, monkeypatch):
    from tests.conftest import free_port
    from worker.webhooks import deliver

    monkeypatch.setenv("GUARDTUNE_WEBHOOK_TIMEOUT_S", "2")
    clear_caches()
    endpoint_id, _ = with_endpoint("org-gone", f"http://127.0.0.1:{free_port()}/nobody")
    job_id = cancelled_job("org-gone")
    assert deliver(job_id, live_row(job_id).id) == 1
    [(attempt, status_code, error, status)] = log_of("org-gone", endpoint_id)
    assert (attempt, status_code, status) == (1, None, "pending")
    assert error.startswith("ConnectError")


def test_an_organization_without_endpoints_queues_nothing(pipeline_env):
    from core.jobs.pipeline import WEBHOOK_TASK

    job_id = cancelled_job("org-quiet")
    row = live_row(job_id)
    assert row is None or row.task != WEBHOOK_TASK


@pytest.mark.slow
def test_a_real_worker_delivers_and_its_reaper_retries(stack_env, monkeypatch, tmp_path):
    """The deployment's stack (Postgres, Redis, a real Celery worker with its reaper): a job
    cancelled here sends the delivery task through Redis to the worker's default queue; the
    receiver answers 500, the reaper sends the retry after the backoff, the second POST is
    delivered."""
    from core import registry
    from core.db import session_scope
    from core.settings import get_settings
    from tests.conftest import apply_env, start_worker, stop_process
    from tests.worker.jobs import wait_for

    env = {**stack_env, "GUARDTUNE_WEBHOOK_BACKOFF_S": "1"}
    apply_env(monkeypatch, env)
    with session_scope() as session:
        registry.seed_base_models(session, get_settings())
    org_id = f"org-hooks-{time.monotonic_ns()}"
    with receiver(answers=[500]) as hook:
        endpoint_id, secret = with_endpoint(org_id, hook.url)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            job_id = cancelled_job(org_id)
            wait_for(lambda: len(hook.received) >= 2, 120, "the worker to deliver the event twice")
            wait_for(lambda: len(log_of(org_id, endpoint_id)) == 2, 30, "the second attempt to be logged")
        finally:
            stop_process(worker)
    first, second = hook.received
    assert unwrap(first, secret).id == unwrap(second, secret).id
    assert unwrap(second, secret).data.id == job_id
    assert [(a, code, status) for a, code, _, status in log_of(org_id, endpoint_id)] == [
        (1, 500, "delivered"),
        (2, 200, "delivered"),
    ]
