"""Jobs of an organization and what hangs off them (events, checkpoints, safety report).

Events, checkpoints and the report carry no organization of their own: they are reached
through a job of this organization, which the service fetches with
:meth:`JobRepository.get` first."""

from __future__ import annotations

import builtins
from typing import Literal

from sqlalchemy import Text, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from core.jobs.vocab import ACTIVE
from core.models import Checkpoint, Job, JobEvent, SafetyReport
from core.pagination import paginate
from core.repository import OrgScopedRepository


def _has_metadata(dialect: str, key: str, value: str) -> ColumnElement[bool]:
    """``metadata[key] == value``, for any key: on SQLite a JSON path cannot quote every key
    (``"`` has no escape), so the pairs are matched with ``json_each`` instead."""
    if dialect == "sqlite":
        pairs = func.json_each(Job.metadata_).table_valued("key", "value")
        return select(pairs.c.key).where(pairs.c.key == key, pairs.c.value == value).exists()
    return Job.metadata_[key].as_string() == value  # the key is a bound parameter of ->>


class JobRepository(OrgScopedRepository[Job]):
    model = Job

    def get_with_report(self, job_id: str) -> tuple[Job, SafetyReport | None] | None:
        """A job of the organization and its safety report (if any), in one query."""
        row = self.session.execute(
            self.scoped(select(Job, SafetyReport).outerjoin(SafetyReport, SafetyReport.job_id == Job.id)).where(
                Job.id == job_id
            )
        ).first()
        return None if row is None else (row[0], row[1])

    def versions(self, job_id: str) -> tuple[int, int | None] | None:
        """``(job version, report version or None)`` of a job of the organization, or None:
        what a conditional poll compares, read without loading the rows (nor the ORM)."""
        query = self.scoped(
            select(Job.version, SafetyReport.version).outerjoin(SafetyReport, SafetyReport.job_id == Job.id)
        ).where(Job.id == job_id)
        row = self.session.connection().execute(query).first()
        return None if row is None else (row[0], row[1])

    def event_marks(self, job_id: str) -> tuple[int | None, int] | None:
        """``(newest event's seq, number of events)`` of a job of the organization, or None.
        Events are only ever appended, so the pair changes exactly when the set does."""
        row = self.session.execute(
            self.scoped(
                select(func.max(JobEvent.seq), func.count(JobEvent.seq))
                .select_from(Job)
                .outerjoin(JobEvent, JobEvent.job_id == Job.id)
            )
            .where(Job.id == job_id)
            .group_by(Job.id)
        ).first()
        return None if row is None else (row[0], row[1])

    def get_by_idempotency_key(self, key: str) -> Job | None:
        return self.session.scalar(self.scoped(select(Job)).where(Job.idempotency_key == key))

    def list(
        self, *, after: str | None, limit: int, metadata: dict[str, str] | None
    ) -> tuple[builtins.list[Job], bool]:
        """Newest first; with ``metadata``, only jobs whose metadata has every given
        ``key: value`` pair; ``metadata=None``: only jobs without metadata."""
        query = self.scoped(select(Job))
        if metadata is None:  # SQL NULL or JSON null
            query = query.where(func.coalesce(cast(Job.metadata_, Text), "null") == "null")
        dialect = self.session.get_bind().dialect.name
        for key, value in (metadata or {}).items():
            query = query.where(_has_metadata(dialect, key, value))
        return paginate(
            self.session,
            query,
            keys=(Job.seq,),
            descending=True,
            after=after,
            cursor=self.get,
            limit=limit,
            noun="job",
        )

    def count_active(self) -> int:
        return (
            self.session.scalar(self.scoped(select(func.count()).select_from(Job)).where(Job.status.in_(ACTIVE))) or 0
        )

    # -- events --------------------------------------------------------------------------
    def add_event(self, row: JobEvent) -> JobEvent:
        self.session.add(row)
        self.session.flush()
        return row

    def events(
        self, job_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[builtins.list[JobEvent], bool]:
        def cursor(event_id: str):
            return self.session.execute(
                select(JobEvent.seq).where(JobEvent.job_id == job_id, JobEvent.id == event_id)
            ).first()

        return paginate(
            self.session,
            select(JobEvent).where(JobEvent.job_id == job_id),
            keys=(JobEvent.seq,),
            descending=order == "desc",
            after=after,
            cursor=cursor,
            limit=limit,
            noun="event",
            scope=" in this job",
        )

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoints(self, job_id: str, *, after: str | None, limit: int) -> tuple[builtins.list[Checkpoint], bool]:
        def cursor(checkpoint_id: str):
            return self.session.execute(
                select(Checkpoint.step).where(Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id)
            ).first()

        return paginate(
            self.session,
            select(Checkpoint).where(Checkpoint.job_id == job_id),
            keys=(Checkpoint.step,),
            descending=True,
            after=after,
            cursor=cursor,
            limit=limit,
            noun="checkpoint",
            scope=" in this job",
        )

    # -- safety report -------------------------------------------------------------------
    def report(self, job_id: str) -> SafetyReport | None:
        return self.session.get(SafetyReport, job_id)

    def reports(self, job_ids: builtins.list[str]) -> dict[str, SafetyReport]:
        if not job_ids:
            return {}
        rows = self.session.scalars(select(SafetyReport).where(SafetyReport.job_id.in_(job_ids)))
        return {row.job_id: row for row in rows}
