"""Keyset (cursor) pagination of a query, shared by every repository that lists pages.

A page is ordered by ``keys`` (unique together, e.g. ``(File.created_at, File.id)`` or
``(Job.seq,)``), all ascending or all descending. ``after`` is the id of the last item of
the previous page: ``cursor(after)`` resolves it to that item's row (anything carrying
the keys' attributes: an ORM object or a ``Row`` of the key columns), and the page holds
the rows strictly past it in that order. An ``after`` that resolves to nothing answers
400 ``invalid_cursor`` naming the parameter ``after``.

One extra row is read to tell whether another page follows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from core.errors import InvalidRequest

R = TypeVar("R")


def _past(keys: Sequence[InstrumentedAttribute[Any]], row: object, descending: bool) -> ColumnElement[bool]:
    """Rows after ``row`` in the order of ``keys``: ``k1 > v1 OR (k1 = v1 AND k2 > v2) ...``
    (``<`` when descending)."""
    values = [getattr(row, key.key) for key in keys]
    clauses = []
    for i, key in enumerate(keys):
        beyond = key < values[i] if descending else key > values[i]
        clauses.append(and_(*(keys[j] == values[j] for j in range(i)), beyond))
    return or_(*clauses)


def paginate(
    session: Session,
    query: Select[R],
    *,
    keys: Sequence[InstrumentedAttribute[Any]],
    descending: bool,
    after: str | None,
    cursor: Callable[[str], object | None],
    limit: int,
    noun: str,
    scope: str = "",
) -> tuple[list[R], bool]:
    """``(rows, has_more)``: at most ``limit`` rows of ``query`` past the cursor ``after``.

    An unknown cursor answers "No {noun} with id {after!r}{scope} to continue after."
    (``noun="event", scope=" in this job"``)."""
    if after:
        row = cursor(after)
        if row is None:
            raise InvalidRequest(
                f"No {noun} with id {after!r}{scope} to continue after.", code="invalid_cursor", param="after"
            )
        query = query.where(_past(keys, row, descending))
    order = [key.desc() if descending else key.asc() for key in keys]
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
