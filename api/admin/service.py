"""Organizations and API keys, for admin-scoped keys, over :mod:`core.orgs` (shared with
ops). Every change is audited in its own transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.admin.repository import OrgRepository
from api.admin.schemas import ApiKeyCreate, OrganizationCreate, OrganizationUpdate
from api.deps import Caller
from api.keycache import forget_all
from core import orgs as orgs_core
from core.errors import NotFound
from core.models import ApiKey, Organization
from core.settings import Settings


class AdminService:
    def __init__(self, session: Session, settings: Settings):
        self.session = session
        self.settings = settings
        self.orgs = OrgRepository(session)

    def get_org(self, org_id: str) -> Organization:
        org = self.orgs.get(org_id)
        if org is None:
            raise NotFound(f"No such organization: {org_id!r}.", code="org_not_found", param="org_id")
        return org

    def list_orgs(self, *, after: str | None, limit: int) -> tuple[list[Organization], bool]:
        return self.orgs.list(after=after, limit=limit)

    def create_org(self, caller: Caller, body: OrganizationCreate) -> Organization:
        org = orgs_core.create_org(self.session, body.name, actor=caller.actor)
        limits = body.model_dump(
            include={"max_concurrent_jobs", "max_storage_bytes", "allowed_modes"}, exclude_none=True
        )
        if limits:
            orgs_core.update_org(self.session, org, limits, actor=caller.actor)
        self.session.commit()
        return org

    def update_org(self, caller: Caller, org_id: str, body: OrganizationUpdate) -> Organization:
        org = self.orgs.get(org_id, for_update=True)
        if org is None:
            raise NotFound(f"No such organization: {org_id!r}.", code="org_not_found", param="org_id")
        changes = body.model_dump(mode="json", exclude_unset=True)
        if changes:
            orgs_core.update_org(self.session, org, changes, actor=caller.actor)
        self.session.commit()
        return org

    def list_keys(self, org_id: str) -> list[ApiKey]:
        return orgs_core.list_keys(self.session, self.get_org(org_id).id)

    def create_key(self, caller: Caller, org_id: str, body: ApiKeyCreate) -> tuple[ApiKey, str]:
        org = self.get_org(org_id)  # by id only (core.orgs also accepts names)
        key, plaintext = orgs_core.create_key(
            self.session, org.id, actor=caller.actor, secret=self.settings.secret_key, scope=body.scope, name=body.name
        )
        self.session.commit()
        return key, plaintext

    def revoke_key(self, caller: Caller, org_id: str, key_id: str) -> ApiKey:
        key = self.orgs.key(org_id, key_id)
        if key is None:
            raise NotFound(f"No such API key in {org_id!r}: {key_id!r}.", code="key_not_found", param="key_id")
        if key.revoked_at is not None:
            return key  # idempotent: already revoked, nothing to record
        key = orgs_core.revoke_key(self.session, key.id, actor=caller.actor)
        self.session.commit()
        forget_all()  # the key stops working in this process now (others: within the TTL)
        return key
