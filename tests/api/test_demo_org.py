"""The demo's organization: ``guardtune demo`` opens standard SFT (``none``) to it the way an
admin PATCH would (audited ``org.update``), once, and issues a new customer key per run."""

from __future__ import annotations

from sqlalchemy import select

from cli.demo import DEMO_ALLOWED_MODES, DEMO_ORG, demo_key
from core.db import session_scope
from core.models import ApiKey, AuditRecord
from core.orgs.service import OrgService
from core.settings import get_settings


def test_demo_key_opens_none_to_the_demo_org_once_and_audits_it(configured):
    first, second = demo_key(), demo_key()
    assert first != second
    with session_scope() as session:
        org = OrgService(session, get_settings()).find(DEMO_ORG)
        assert set(org.allowed_modes) == set(DEMO_ALLOWED_MODES)
        assert "none" in org.allowed_modes
        updates = session.scalars(
            select(AuditRecord).where(AuditRecord.action == "org.update", AuditRecord.target == org.id)
        ).all()
        assert [(u.actor, u.details) for u in updates] == [
            ("ops:demo", {"before": {"allowed_modes": None}, "after": {"allowed_modes": list(DEMO_ALLOWED_MODES)}})
        ]
        keys = session.scalars(select(ApiKey).where(ApiKey.org_id == org.id, ApiKey.name == "demo")).all()
        assert len(keys) == 2
        assert {k.scope for k in keys} == {"customer"}
