"""Organizations and API keys: look up, create, change limits, create and revoke keys
(the admin API, ops and the demo call this one service).

Each change writes its audit record in the caller's session; the caller commits, so the
change and its record land together. A key's plaintext is returned once by
:meth:`OrgService.create_key` and never stored or audited (only its display prefix).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.audit import service as audit
from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from core.models import ApiKey, Organization, now
from core.orgs.apikeys import generate_key
from core.orgs.repository import KeyRepository, OrgRepository
from core.revocation import revoke
from core.settings import Settings
from core.vocab import KeyScope


class OrgService:
    def __init__(self, session: Session, settings: Settings):
        self.session = session
        self.settings = settings
        self.orgs = OrgRepository(session)

    # -- organizations -----------------------------------------------------------------------
    def get(self, org_id: str, *, for_update: bool = False) -> Organization:
        """The organization ``org_id`` (by id only; ``for_update``: its row locked, see
        :meth:`OrgRepository.get`), or 404 ``org_not_found`` naming ``org_id``."""
        org = self.orgs.get(org_id, for_update=for_update)
        if org is None:
            raise NotFound(f"No such organization: {org_id!r}.", code="org_not_found", param="org_id")
        return org

    def find(self, ref: str) -> Organization:
        """An organization by id or by name (404 ``org_not_found``)."""
        org = self.orgs.by_ref(ref)
        if org is None:
            raise NotFound(f"no organization {ref!r}", code="org_not_found")
        return org

    def page(self, *, after: str | None, limit: int) -> tuple[list[Organization], bool]:
        return self.orgs.page(after=after, limit=limit)

    def create(self, name: str, *, actor: str, limits: dict[str, Any] | None = None) -> Organization:
        """A new organization (audited ``org.create``); with ``limits``, then set as by
        :meth:`update`."""
        name = name.strip()
        if not name:
            raise InvalidRequest("organization name must not be empty", param="name")
        if self.orgs.name_taken(name):
            raise Conflict(f"an organization named {name!r} already exists", code="org_exists")
        org = self.orgs.add(Organization(id=new_id("org"), name=name, created_at=now()))
        audit.record(self.session, actor=actor, action="org.create", target=org.id, details={"name": name})
        if limits:
            self.update(org, limits, actor=actor)
        return org

    def update(self, org: Organization, changes: dict[str, Any], *, actor: str) -> None:
        """Set ``changes`` (validated columns: limits, ``allowed_modes``; ``None`` = the
        deployment's default) on ``org``, audited as ``org.update`` with the values before and
        after."""
        before = {key: getattr(org, key) for key in changes}
        for key, value in changes.items():
            setattr(org, key, value)
        self.session.flush()
        audit.record(
            self.session, actor=actor, action="org.update", target=org.id, details={"before": before, "after": changes}
        )

    # -- API keys ----------------------------------------------------------------------------
    def keys(self, org: Organization) -> list[ApiKey]:
        """The organization's keys, oldest first."""
        return KeyRepository(self.session, org.id).all()

    def key(self, org_id: str, key_id: str) -> ApiKey:
        """The key ``key_id`` of the organization ``org_id``, or 404 ``key_not_found``."""
        key = KeyRepository(self.session, org_id).get(key_id)
        if key is None:
            raise NotFound(f"No such API key in {org_id!r}: {key_id!r}.", code="key_not_found", param="key_id")
        return key

    def create_key(
        self, org: Organization, *, actor: str, scope: KeyScope = KeyScope.CUSTOMER, name: str = ""
    ) -> tuple[ApiKey, str]:
        """A new key of ``org`` (audited ``key.create``): ``(row, plaintext)``. The scope is
        checked where it arrives (the admin API's schema, the ops command's flag)."""
        plaintext, prefix, digest = generate_key(self.settings.secret_key)
        key = KeyRepository(self.session, org.id).add(
            ApiKey(
                id=new_id("key"),
                org_id=org.id,
                name=name,
                prefix=prefix,
                key_hash=digest,
                scope=scope,
                created_at=now(),
            )
        )
        audit.record(
            self.session,
            actor=actor,
            action="key.create",
            target=key.id,
            details={"org_id": org.id, "scope": scope, "prefix": prefix, "name": name},
        )
        return key, plaintext

    def revoke_key(self, key_id: str, *, actor: str) -> ApiKey:
        """Revoke the key ``key_id`` (audited ``key.revoke``): 404 ``key_not_found``, 409
        ``key_revoked`` when it was revoked already."""
        return revoke(
            self.session,
            ApiKey,
            key_id,
            missing=NotFound(f"no API key {key_id!r}", code="key_not_found"),
            revoked=Conflict(f"API key {key_id} was already revoked", code="key_revoked"),
            actor=actor,
            action="key.revoke",
            details=lambda key: {"org_id": key.org_id},
        )
