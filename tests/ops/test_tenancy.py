"""Tenancy in one place (core/repository.py) and the one revoke sequence (core/revocation.py),
on SQLite and Postgres: a repository of one organization never returns another's rows."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.errors import Conflict, NotFound
from core.models import ApiKey, AuditRecord, Job
from core.orgs.repository import KeyRepository
from core.orgs.service import OrgService
from core.releases import service as releases
from core.releases.repository import ReleaseRepository
from core.revocation import revoke
from core.settings import get_settings
from tests.ops.factories import make_job


def _two_orgs_with_a_key_each() -> tuple[str, str, str, str]:
    """``(org a, org b, key of a, key of b)``."""
    with session_scope() as session:
        service = OrgService(session, get_settings())
        a, b = service.create("a", actor="ops:t"), service.create("b", actor="ops:t")
        key_a, _ = service.create_key(a, actor="ops:t")
        key_b, _ = service.create_key(b, actor="ops:t")
        return a.id, b.id, key_a.id, key_b.id


def test_a_scoped_repository_never_returns_another_organizations_row(backend):
    a, b, key_a, key_b = _two_orgs_with_a_key_each()
    with session_scope() as session:
        keys_a = KeyRepository(session, a)
        assert keys_a.get(key_a).id == key_a
        assert keys_a.get(key_b) is None
        assert keys_a.get(key_b, for_update=True) is None
        assert [k.id for k in keys_a.all()] == [key_a]
        assert {k.id for k in KeyRepository.for_operator(session).all()} == {key_a, key_b}
        with pytest.raises(ValueError, match="added through a repository of"):
            keys_a.add(ApiKey(id="key-x", org_id=b, name="", prefix="gt-", key_hash="h", scope="customer"))
    with pytest.raises(ValueError, match="organization id is required"):
        KeyRepository(None, "")  # type: ignore[arg-type]


def test_released_models_are_scoped_by_organization(backend):
    a, b, _, _ = _two_orgs_with_a_key_each()
    job_a, job_b = (make_job(org, status="succeeded", error=None) for org in (a, b))
    with session_scope() as session:
        model_a, model_b = (
            releases.release_job(session, session.get(Job, j), actor="system", sha256="a" * 64, storage_prefix="p").id
            for j in (job_a, job_b)
        )
    with session_scope() as session:
        repo_a = ReleaseRepository(session, a)
        assert repo_a.serving(model_a).id == model_a
        assert repo_a.serving(model_b) is None
        assert [m.id for m in repo_a.serving_list()] == [model_a]
        assert repo_a.of_job(job_b) is None
        assert repo_a.of_job(job_a).id == model_a
        assert repo_a.related_ids(job_b) == {job_b}
        every = ReleaseRepository.for_operator(session)
        assert {m.id for m in every.newest_first()} == {model_a, model_b}
        assert every.related_ids(job_b) == {job_b, model_b}


def test_revoke_locks_checks_sets_and_audits_once(backend):
    _, _, key_a, _ = _two_orgs_with_a_key_each()

    def revoke_key(key_id: str) -> ApiKey:
        return revoke(
            session,
            ApiKey,
            key_id,
            missing=NotFound("missing", code="key_not_found"),
            revoked=Conflict("again", code="key_revoked"),
            actor="ops:t",
            action="key.revoke",
            details=lambda key: {"org_id": key.org_id},
            name="revoked-by-test",
        )

    with session_scope() as session:
        key = revoke_key(key_a)
        assert key.revoked_at is not None
        assert key.name == "revoked-by-test"
    with session_scope() as session:
        with pytest.raises(Conflict, match="again"):
            revoke_key(key_a)
        with pytest.raises(NotFound, match="missing"):
            revoke_key("key-nope")
    with session_scope() as session:
        records = session.scalars(select(AuditRecord).where(AuditRecord.action == "key.revoke")).all()
        assert [(r.target, r.actor) for r in records] == [(key_a, "ops:t")]
