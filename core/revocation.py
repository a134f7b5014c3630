"""The one revoke sequence of revocable rows (API keys, released models): lock the row,
404 if it is missing, 409 if it was revoked already, set ``revoked_at``, audit it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from core.audit import service as audit
from core.errors import Conflict, NotFound
from core.models import now


class Revocable(Protocol):
    """A mapped row that is revoked by setting its ``revoked_at``."""

    revoked_at: int | None  # unix seconds, as every timestamp column


R = TypeVar("R", bound=Revocable)


def revoke(
    session: Session,
    model: type[R],
    row_id: str,
    *,
    missing: NotFound,
    revoked: Conflict,
    actor: str,
    action: str,
    details: Callable[[R], dict[str, Any]],
    **values: Any,
) -> R:
    """Revoke the row ``row_id`` of ``model`` in the caller's transaction (flushed, not
    committed): raise ``missing`` if there is none, ``revoked`` if its ``revoked_at`` is set;
    otherwise set ``revoked_at`` (and the columns ``values``) and record ``action`` by
    ``actor`` on it with ``details(row)``."""
    row = session.get(model, row_id, with_for_update=True)
    if row is None:
        raise missing
    if row.revoked_at is not None:
        raise revoked
    row.revoked_at = now()
    for column, value in values.items():
        setattr(row, column, value)
    session.flush()
    audit.record(session, actor=actor, action=action, target=row_id, details=details(row))
    return row
