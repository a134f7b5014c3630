"""Bounded artifacts: a job keeps its newest ``GUARDTUNE_KEEP_CHECKPOINTS`` checkpoints in the
object store and the checkpoints table (what the API lists), and the train stage's work dir
is removed however the stage ends."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import clear_caches
from tests.worker.conftest import create_job, demo_lines


def run_to_training(job_id: str) -> str | None:
    """validate, scan and train in this process; what train handed on."""
    from worker.tasks import run_stage

    assert run_stage("validate", job_id) == "scan"
    assert run_stage("scan", job_id) == "train"
    return run_stage("train", job_id)


def test_only_the_newest_checkpoints_are_stored_and_listed(pipeline_env, monkeypatch):
    from core.db import session_scope
    from core.models import Checkpoint, Job
    from core.settings import get_settings
    from core.storage import get_store
    from worker.pipeline.resources import job_prefix

    monkeypatch.setenv("GUARDTUNE_CHECKPOINT_EVERY", "1")
    monkeypatch.setenv("GUARDTUNE_KEEP_CHECKPOINTS", "2")
    clear_caches()
    with session_scope() as session:
        job_id = create_job(session, "org-keep", demo_lines(16))  # 4 steps of 4
    assert run_to_training(job_id) == "evaluate"
    with session_scope() as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        stored = get_store().list(job_prefix(session.get_one(Job, job_id), "checkpoints") + "/")
    assert sorted(row.step for row in rows) == [3, 4]
    assert sorted({key.split("/checkpoints/")[1].split("/")[0] for key in stored}) == ["step-000003", "step-000004"]
    assert not (get_settings().home_dir / "work" / job_id).exists()


def test_the_work_dir_is_removed_when_training_fails(pipeline_env, monkeypatch):
    from core.db import session_scope
    from core.models import Job
    from core.settings import get_settings
    from worker.pipeline import train

    def broken_upload(*args, **kwargs):
        raise RuntimeError("upload broke")

    with session_scope() as session:
        job_id = create_job(session, "org-workdir", demo_lines(8))
    monkeypatch.setattr(train, "upload_dir", broken_upload)  # the first checkpoint's upload fails
    assert run_to_training(job_id) is None
    with session_scope() as session:
        assert session.get_one(Job, job_id).error["code"] == "internal_error"
    assert not (get_settings().home_dir / "work" / job_id).exists()
