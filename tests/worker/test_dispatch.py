"""The fair-share dispatcher of GPU stages (:mod:`core.dispatch`) on a database of each kind:
held rows go into the free slots, each to the organization owed the GPU most; and on the
embedded stack, with organization A holding 4 queued jobs and one GPU slot, organization B's
new job starts its first GPU stage before A's next job does."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from tests.conftest import apply_env
from tests.worker.conftest import create_job, demo_lines
from tests.worker.faults import fresh_database

SCAN, TRAIN = "guardtune.pipeline.scan", "guardtune.pipeline.train"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path, monkeypatch) -> Iterator[None]:
    """This process configured as the embedded stack (its broker and store) on a fresh,
    migrated database of either kind, with ``GUARDTUNE_GPU_SLOTS`` = 1."""
    from migrations import migrate

    env = {"GUARDTUNE_HOME": str(tmp_path / "var"), "GUARDTUNE_LOG_JSON": "false", "GUARDTUNE_GPU_SLOTS": "1"}
    if request.param == "sqlite":
        apply_env(monkeypatch, env)
        migrate.upgrade()
        yield
        return
    with fresh_database() as url:
        apply_env(monkeypatch, {**env, "GUARDTUNE_DATABASE_URL": url})
        migrate.upgrade()
        yield
        from core.db import get_engine

        get_engine().dispose()  # before the database is dropped


def new_job(org_id: str) -> str:
    from core.db import session_scope

    with session_scope() as session:
        return create_job(session, org_id, demo_lines(4), status="queued")


def queue(job_id: str, task: str = SCAN) -> str:
    """Write the job's next GPU row (held until the dispatcher sends it); its id."""
    from core import outbox
    from core.db import session_scope

    with session_scope() as session:
        return outbox.add(session, job_id, task, "gpu").id


def released() -> list[str]:
    from core import dispatch

    return [message.id for message in dispatch.release()]


def ran_for(message_id: str, seconds: float) -> None:
    """The row's stage started ``seconds`` ago (its dispatch moved into the past)."""
    from core.db import session_scope
    from core.models import OutboxMessage

    with session_scope() as session:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id == message_id).values(sent_at=time.time() - seconds)
        )


def test_the_organization_with_less_gpu_time_gets_the_freed_slot(backend):
    a_jobs = [new_job("org-a") for _ in range(4)]
    b_job = new_job("org-b")
    a_scans = [queue(job_id) for job_id in a_jobs]
    b_scan = queue(b_job)
    assert released() == [a_scans[0]]  # the oldest job first while nobody has used the GPU
    assert released() == []  # the one slot is taken
    ran_for(a_scans[0], 120)
    a_train = queue(a_jobs[0], TRAIN)  # A's first scan ended: its training is held too
    assert released() == [b_scan]  # not A's training, nor A's next job's scan
    ran_for(b_scan, 10)
    b_train = queue(b_job, TRAIN)
    assert released() == [b_train]  # B has still used less (10 s against 120 s)
    ran_for(b_train, 200)
    queue(b_job, "guardtune.pipeline.evaluate")
    assert released() == [a_train]  # now A has: its own job's next stage before its other jobs


def test_free_slots_are_shared_between_organizations(backend, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("GUARDTUNE_GPU_SLOTS", "2")
    get_settings.cache_clear()
    a_scans = [queue(new_job("org-a")) for _ in range(2)]
    b_scans = [queue(new_job("org-b")) for _ in range(2)]
    assert released() == [a_scans[0], b_scans[0]]  # one each, not A's two oldest


def weigh(org_id: str, weight: int) -> None:
    from core.db import session_scope
    from core.models import Organization

    with session_scope() as session:
        session.execute(update(Organization).where(Organization.id == org_id).values(gpu_weight=weight))


def test_an_organization_of_weight_two_gets_twice_the_slots(backend, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("GUARDTUNE_GPU_SLOTS", "3")
    get_settings.cache_clear()
    b_scans = [queue(new_job("org-b")) for _ in range(3)]  # B's jobs are the older ones
    a_scans = [queue(new_job("org-a")) for _ in range(3)]
    weigh("org-a", 2)
    assert released() == [b_scans[0], a_scans[0], a_scans[1]]  # equal weights: B's second job third


def test_gpu_seconds_are_compared_per_unit_of_weight(backend):
    a_job, b_job = new_job("org-a"), new_job("org-b")
    weigh("org-a", 2)
    a_scan, b_scan = queue(a_job), queue(b_job)
    assert released() == [a_scan]
    ran_for(a_scan, 150)  # 75 s per unit of A's weight
    a_train = queue(a_job, TRAIN)
    assert released() == [b_scan]
    ran_for(b_scan, 100)
    queue(b_job, TRAIN)
    assert released() == [a_train]  # 75 s against 100 s (with equal weights, 150 s against 100 s: B's)


def test_a_cancelled_job_frees_its_slot_and_its_held_stage_is_never_sent(backend):
    from core.db import session_scope
    from core.models import Job, OutboxMessage

    running, waiting, other = new_job("org-a"), new_job("org-a"), new_job("org-b")
    first, held, next_up = queue(running), queue(waiting), queue(other)
    assert released() == [first]
    with session_scope() as session:
        session.execute(update(Job).where(Job.id.in_([running, waiting])).values(status="cancelled"))
    assert released() == [next_up]
    with session_scope() as session:
        assert session.get(Job, waiting) is not None
        row = session.query(OutboxMessage).filter(OutboxMessage.id == held).one()
        assert row.sent_at is None


def test_a_retry_waits_out_its_backoff_before_it_competes(backend):
    from core import outbox
    from core.db import session_scope

    retried, other = new_job("org-a"), new_job("org-b")
    with session_scope() as session:
        backoff = outbox.add(session, retried, SCAN, "gpu", not_before=time.time() + 60).id
    later = queue(other)
    assert released() == [later]
    assert backoff not in released()


def test_without_slots_every_gpu_row_is_sent_at_once(backend, monkeypatch):
    from core import dispatch
    from core.settings import get_settings

    monkeypatch.setenv("GUARDTUNE_GPU_SLOTS", "0")
    get_settings.cache_clear()
    assert not dispatch.holds("gpu")
    queue(new_job("org-a"))
    assert released() == []


def gpu_messages() -> set[str]:
    """The ids of the messages waiting in the broker's ``gpu`` queue."""
    from core.queue import GPU_QUEUE, broker_message_ids

    return broker_message_ids(queues=(GPU_QUEUE,))


@pytest.mark.slow  # a real scan (and its probe's training) on the tiny model: minutes on a loaded machine
def test_a_new_organization_starts_before_the_next_job_of_one_holding_four(pipeline_env, monkeypatch):
    """The embedded stack (SQLite, its broker), the stages run in this process on the tiny
    model: A's 4 jobs and then B's are validated; A's first scan takes the one slot; when it
    ends the slot goes to B's scan, not to A's next job nor to A's training. (Without the
    dispatcher all 5 scans go to the broker's FIFO queue at validation, B's last.)"""
    from core import outbox
    from core.db import session_scope
    from core.settings import get_settings
    from worker.tasks import run_stage

    monkeypatch.setenv("GUARDTUNE_GPU_SLOTS", "1")
    get_settings.cache_clear()
    with session_scope() as session:
        jobs = [create_job(session, org, demo_lines(8)) for org in ["org-a"] * 4 + ["org-b"]]
    for job_id in jobs:
        with session_scope() as session:
            start = outbox.add(session, job_id, "guardtune.pipeline.start", "default")
        assert run_stage("validate", job_id, start.id) == "scan"
    with session_scope() as session:
        scans = {job_id: outbox.latest(session, job_id).id for job_id in jobs}
    assert gpu_messages() == {scans[jobs[0]]}  # one slot: A's first job alone
    assert run_stage("scan", jobs[0], scans[jobs[0]]) == "train"  # (its message stays: no broker worker here)
    assert gpu_messages() == {scans[jobs[0]], scans[jobs[4]]}  # B's scan, ahead of A's 3 jobs and A's training
