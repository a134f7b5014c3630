"""The train stage's start of a continued job (``model="ft:…"``): the released adapter it
continues from is downloaded and checked against its released digest; a parent revoked, or
whose stored adapter changed, since the job was created fails the job ``parent_model_unavailable``."""

from __future__ import annotations

import pytest

from tests.worker.conftest import create_job, demo_lines, store_adapter


def _continued_job(org_id: str, weights: bytes = b"\1" * 64) -> tuple[str, str]:
    """``(job id, parent model id)``: a released parent and a job continuing from it."""
    from core.db import session_scope
    from core.models import Job
    from core.releases import service as releases
    from core.releases.digests import adapter_prefix

    with session_scope() as session:
        parent_job = create_job(session, org_id, demo_lines(4))
    digest = store_adapter(org_id, parent_job, weights)
    with session_scope() as session:
        parent = releases.release_job(
            session,
            session.get_one(Job, parent_job),
            actor="system",
            sha256=digest,
            storage_prefix=adapter_prefix(org_id, parent_job),
        )
        job_id = create_job(session, org_id, demo_lines(4), parent_model=parent.id)
        return job_id, parent.id


def _job(job_id: str):
    from core.db import session_scope
    from core.models import Job

    with session_scope() as session:
        return session.get_one(Job, job_id)


def test_the_parent_adapter_is_downloaded_as_released(pipeline_env, tmp_path):
    from core.db import session_scope
    from core.models import ReleasedModel
    from core.releases.digests import dir_sha256
    from worker.pipeline.resources import download_parent_adapter

    job_id, parent_id = _continued_job("org-continue", weights=b"\2" * 64)
    got = download_parent_adapter(_job(job_id), tmp_path / "parent")
    assert got == tmp_path / "parent"
    assert (got / "adapter_model.safetensors").read_bytes() == b"\2" * 64
    with session_scope() as session:
        assert dir_sha256(got) == session.get_one(ReleasedModel, parent_id).sha256
    with session_scope() as session:
        fresh = create_job(session, "org-continue", demo_lines(4))
    assert download_parent_adapter(_job(fresh), tmp_path / "none") is None


@pytest.mark.parametrize("change", ["revoked", "adapter_changed"])
def test_a_parent_revoked_or_changed_since_creation_fails_the_job(pipeline_env, tmp_path, change):
    import io

    from core.db import session_scope
    from core.models import ReleasedModel, now
    from core.storage import get_store
    from worker.pipeline.jobstate import StageError
    from worker.pipeline.resources import download_parent_adapter

    job_id, parent_id = _continued_job(f"org-parent-{change}".replace("_", "-"))
    with session_scope() as session:
        parent = session.get_one(ReleasedModel, parent_id)
        if change == "revoked":  # as core.revocation marks it (its objects are deleted too)
            parent.revoked_at = now()
        else:
            get_store().put_stream(f"{parent.storage_prefix}/adapter_model.safetensors", io.BytesIO(b"\3" * 64))
    with pytest.raises(StageError) as err:
        download_parent_adapter(_job(job_id), tmp_path / "parent")
    assert (err.value.code, err.value.param) == ("parent_model_unavailable", "model")
    assert parent_id in err.value.message
