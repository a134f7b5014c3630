"""Tenancy in one place: the base of every repository whose rows belong to an organization.

An :class:`OrgScopedRepository` holds the session and the organization it reads for; every
query it runs goes through :meth:`~OrgScopedRepository.scoped`, which adds
``WHERE <model>.org_id = :org``, so a service built on it cannot forget the filter and
another organization's row reads as missing. The operator (``guardtune-ops``, the worker)
reads across organizations through :meth:`~OrgScopedRepository.for_operator`, the one
way to build a repository without the filter.
"""

from __future__ import annotations

from typing import Generic, Protocol, Self, TypeVar, TypeVarTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Mapped, Session


class OrgOwned(Protocol):
    """A mapped row of one organization: what :class:`OrgScopedRepository` filters on."""

    id: Mapped[str]
    org_id: Mapped[str]


M = TypeVar("M", bound=OrgOwned)
Ts = TypeVarTuple("Ts")


class OrgScopedRepository(Generic[M]):
    """Rows of ``model`` (a table with ``id`` and ``org_id`` columns) of one organization."""

    model: type[M]

    def __init__(self, session: Session, org_id: str):
        if not org_id:
            raise ValueError("an organization id is required (across organizations: for_operator)")
        self.session = session
        self.org_id: str | None = org_id

    @classmethod
    def for_operator(cls, session: Session) -> Self:
        """A repository reading every organization's rows (no tenant filter)."""
        repo = cls.__new__(cls)
        repo.session, repo.org_id = session, None
        return repo

    def scoped(self, query: Select[*Ts]) -> Select[*Ts]:
        """``query`` restricted to this repository's organization (unchanged for the operator)."""
        if self.org_id is None:
            return query
        return query.where(self.model.org_id == self.org_id)

    def get(self, row_id: str, *, for_update: bool = False) -> M | None:
        """The organization's row ``row_id`` (None if missing or another organization's);
        ``for_update`` locks it until the transaction ends."""
        query = self.scoped(select(self.model).where(self.model.id == row_id))
        if for_update:
            query = query.with_for_update()
        return self.session.scalar(query)

    def add(self, row: M) -> M:
        """Insert ``row`` (flushed). It must belong to this repository's organization."""
        if self.org_id is not None and row.org_id != self.org_id:
            raise ValueError(f"{type(row).__name__} of {row.org_id!r} added through a repository of {self.org_id!r}")
        self.session.add(row)
        self.session.flush()
        return row
