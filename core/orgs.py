"""Organizations and API keys: create, look up, change limits, revoke (shared by ops and
the admin API).

Each mutating function writes its audit record in the caller's session; the caller
commits, so the change and its record land together. A key's plaintext is returned
once by :func:`create_key` and never stored or audited (only its display prefix).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core import audit
from core.apikeys import generate_key
from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from core.models import ApiKey, Organization, now

SCOPES = ("customer", "admin")


def find_org(session: Session, ref: str) -> Organization:
    """An organization by id or by name."""
    org = session.scalar(select(Organization).where(or_(Organization.id == ref, Organization.name == ref)))
    if org is None:
        raise NotFound(f"no organization {ref!r}", code="org_not_found")
    return org


def create_org(session: Session, name: str, *, actor: str) -> Organization:
    name = name.strip()
    if not name:
        raise InvalidRequest("organization name must not be empty", param="name")
    if session.scalar(select(Organization.id).where(Organization.name == name)) is not None:
        raise Conflict(f"an organization named {name!r} already exists", code="org_exists")
    org = Organization(id=new_id("org"), name=name, created_at=now())
    session.add(org)
    session.flush()
    audit.record(session, actor=actor, action="org.create", target=org.id, details={"name": name})
    return org


def update_org(session: Session, org: Organization, changes: dict[str, Any], *, actor: str) -> None:
    """Set ``changes`` (validated columns: limits, ``allowed_modes``; ``None`` = the
    deployment's default) on ``org``, audited as ``org.update`` with the values before and
    after."""
    before = {key: getattr(org, key) for key in changes}
    for key, value in changes.items():
        setattr(org, key, value)
    session.flush()
    audit.record(session, actor=actor, action="org.update", target=org.id, details={"before": before, "after": changes})


def create_key(
    session: Session, org_ref: str, *, actor: str, secret: str, scope: str = "customer", name: str = ""
) -> tuple[ApiKey, str]:
    """A new key for the organization (id or name): ``(row, plaintext)``."""
    if scope not in SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}", param="scope")
    org = find_org(session, org_ref)
    plaintext, prefix, digest = generate_key(secret)
    key = ApiKey(
        id=new_id("key"), org_id=org.id, name=name, prefix=prefix, key_hash=digest, scope=scope, created_at=now()
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="key.create",
        target=key.id,
        details={"org_id": org.id, "scope": scope, "prefix": prefix, "name": name},
    )
    return key, plaintext


def revoke_key(session: Session, key_id: str, *, actor: str) -> ApiKey:
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise NotFound(f"no API key {key_id!r}", code="key_not_found")
    if key.revoked_at is not None:
        raise Conflict(f"API key {key_id} was already revoked", code="key_revoked")
    key.revoked_at = now()
    session.flush()
    audit.record(session, actor=actor, action="key.revoke", target=key.id, details={"org_id": key.org_id})
    return key


def list_keys(session: Session, org_ref: str) -> list[ApiKey]:
    org = find_org(session, org_ref)
    return list(session.scalars(select(ApiKey).where(ApiKey.org_id == org.id).order_by(ApiKey.created_at, ApiKey.id)))
