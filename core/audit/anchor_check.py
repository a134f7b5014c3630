"""What ``guardtune-ops audit verify`` expects of the anchors (:mod:`core.audit.anchors`),
checked while it walks the table.

Every grid record (the first at or past each multiple of ``GUARDTUNE_AUDIT_ANCHOR_EVERY``)
and the head must have an anchor, signed by a known key, holding the record's hash: a gap
in the grid, a missing newest anchor, a rewritten chain and a forged anchor all fail.
Every stored anchor must name a record in the table: one beyond its end means the newest
records were deleted, one inside it without its record means records were removed from
the middle. On a versioned S3 bucket, an anchor deleted from the store (a delete marker)
fails too. Only grid and head anchors are read; the others are only listed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from core.audit import anchors
from core.audit.anchors import Anchor
from core.settings import Settings
from core.storage import ObjectStore

HEAD_SETTLE_S = 1.0  # a head committed a moment ago may still be writing its anchor: one re-read after this


class Record(Protocol):
    """What the check reads of a record (an :class:`core.models.AuditRecord`)."""

    seq: int
    hash: str


R = TypeVar("R", bound=Record)


class AnchorCheck:
    """Feed every record in ``seq`` order to :meth:`see`, then call :meth:`finish`."""

    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store
        self.every = settings.audit_anchor_every
        listed = (k for k in store.list(anchors.PREFIX) if k.endswith(".json"))
        self._unmatched = deque(sorted(anchors.seq_of(k) for k in listed))
        self._removed = sorted(anchors.seq_of(k) for k in store.removed(anchors.PREFIX) if k.endswith(".json"))
        self._prev_seq = 0
        self._walk_problems: list[str] = []
        self.newest_matched: int | None = None  # the highest seq whose anchor was read and matched
        self._last_read: int | None = None  # the last seq whose anchor was checked

    def feed(self, records: Iterable[R]) -> Iterator[R]:
        """``records``, each seen by the check as it passes."""
        for rec in records:
            self.see(rec)
            yield rec

    def see(self, rec: Record) -> None:
        while self._unmatched and self._unmatched[0] < rec.seq:
            missing = self._unmatched.popleft()
            self._walk_problems.append(f"anchored record seq {missing} is missing from the table: records were deleted")
        if self._unmatched and self._unmatched[0] == rec.seq:
            self._unmatched.popleft()
        if anchors.crosses_grid(self._prev_seq, rec.seq, self.every):
            self._walk_problems += self._check(rec, anchors.read(rec.seq, self.store), "grid")
        self._prev_seq = rec.seq

    def finish(self, head: Record | None) -> list[str]:
        """Every problem found, the most telling first (truncation, deleted anchors, the head)."""
        end = head.seq if head is not None else "no records"
        problems = [
            f"the log was truncated: anchored record seq {seq} is missing (the table ends at {end})"
            for seq in self._unmatched
        ]
        problems += [f"the anchor of seq {seq} was deleted from the store (a version remains)" for seq in self._removed]
        if head is not None and self._last_read != head.seq:
            problems += self._check(head, self._read_head(head.seq), "head")
        return problems + self._walk_problems

    def _read_head(self, seq: int) -> Anchor | None:
        anchor = anchors.read(seq, self.store)
        if anchor is None:
            time.sleep(HEAD_SETTLE_S)
            anchor = anchors.read(seq, self.store)
        return anchor

    def _check(self, rec: Record, anchor: Anchor | None, what: str) -> list[str]:
        """[] when ``anchor`` is ``rec``'s, validly signed; else the problem."""
        self._last_read = rec.seq
        if anchor is None:
            return [
                f"the {what} record seq {rec.seq} has no anchor: deleted, or its write failed "
                "(check the store, then `guardtune-ops audit anchor --fill`)"
            ]
        if not anchor.valid(self.settings):
            return [f"the anchor of seq {rec.seq} has an invalid signature: forged, or an unknown signing key"]
        if anchor.hash != rec.hash:
            return [f"record seq {rec.seq} does not match its anchor: the chain was rewritten"]
        self.newest_matched = rec.seq
        return []
