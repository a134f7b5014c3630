"""Queries of the audit log (one table for the whole deployment, read by the operator;
records name their organization in ``details``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from core.models import AuditRecord

BATCH = 1000  # rows fetched at a time when walking the whole log


class AuditRepository:
    def __init__(self, session: Session):
        self.session = session

    def head(self) -> Row[int, str] | None:
        """``(seq, hash)`` of the newest record, or None when the log is empty."""
        return self.session.execute(
            select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
        ).first()

    def count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(AuditRecord)) or 0

    def hash_at(self, seq: int) -> str | None:
        return self.session.scalar(select(AuditRecord.hash).where(AuditRecord.seq == seq))

    def has_hash(self, hash_: str) -> bool:
        return self.session.scalar(select(AuditRecord.seq).where(AuditRecord.hash == hash_)) is not None

    def details_of(self, action: str, target: str) -> dict[str, Any] | None:
        """The details of the first ``action`` record on ``target`` (e.g. the ``job.create`` of
        a job, which keeps its request's ``request_sha256``)."""
        return self.session.scalar(
            select(AuditRecord.details).where(AuditRecord.action == action, AuditRecord.target == target).limit(1)
        )

    def latest(self, n: int) -> list[AuditRecord]:
        """The latest ``n`` records, oldest first."""
        return list(self.session.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(n)))[::-1]

    def matching(
        self, *, targets: Iterable[str] | None, actor: str | None, action: str | None, limit: int
    ) -> list[AuditRecord]:
        """Records on any of ``targets``, by ``actor``, of ``action`` (each when given), oldest first."""
        query = select(AuditRecord)
        if targets is not None:
            query = query.where(AuditRecord.target.in_(sorted(targets)))
        if actor:
            query = query.where(AuditRecord.actor == actor)
        if action:
            query = query.where(AuditRecord.action == action)
        return list(self.session.scalars(query.order_by(AuditRecord.seq).limit(limit)))

    def walk(self, *, since: float | None = None, until: float | None = None) -> Iterator[AuditRecord]:
        """Every record created in ``[since, until)`` (each bound when given), in ``seq``
        order, fetched :data:`BATCH` at a time."""
        query = select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=BATCH)
        if since is not None:
            query = query.where(AuditRecord.created_at >= since)
        if until is not None:
            query = query.where(AuditRecord.created_at < until)
        return iter(self.session.scalars(query))
