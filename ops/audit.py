"""``guardtune-ops audit``: read, export, anchor and verify the hash-chained audit log."""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import typer
from rich.progress import Progress, TaskID
from sqlalchemy.orm import Session

from core.audit import anchors
from core.audit import service as audit_log
from core.audit.anchor_check import AnchorCheck
from core.audit.repository import AuditRepository
from core.models import AuditRecord
from core.releases.repository import ReleaseRepository
from core.settings import get_settings
from core.storage import get_store
from ops.common import db
from ops.output import JsonOpt, console, echo_json, err_console, fail, handle_errors, progress_bar, render

R = TypeVar("R")

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

COLUMNS = ["seq", "created_at", "actor", "action", "target", "details"]


def record_dict(rec: AuditRecord) -> dict[str, Any]:
    """Every stored field, so an export can be re-verified offline."""
    return {
        "seq": rec.seq,
        "created_at": rec.created_at,
        "actor": rec.actor,
        "action": rec.action,
        "target": rec.target,
        "details": rec.details,
        "prev_hash": rec.prev_hash,
        "hash": rec.hash,
    }


def parse_when(value: str) -> float:
    """Unix seconds from unix time (``1718000000``, ``1718000000.5``) or an ISO 8601
    date or datetime (``2025-06-01``, ``2025-06-01T12:00:00Z``, ``…+02:00``; naive = UTC)."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither unix time nor an ISO 8601 date/datetime") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _table_rows(records: Iterable[AuditRecord]) -> list[dict[str, Any]]:
    return [record_dict(r) for r in records]


@app.command("tail")
@handle_errors
def tail(
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many of the latest records.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The latest N records, oldest first."""
    with db() as session:
        rows = _table_rows(AuditRepository(session).latest(n))
    render(rows, COLUMNS, as_json=as_json, title="audit log", empty="the audit log is empty")


@app.command("show")
@handle_errors
def show(
    target: Annotated[str | None, typer.Option("--target", help="A job, model, key, org or file id.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor (e.g. ops:alice, key:key-…).")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action (e.g. model.revoke).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Only the target itself, not its job/released model.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Records about one target (a job's records include its released model's), oldest first."""
    if not (target or actor or action):
        raise typer.BadParameter("give at least one of --target, --actor, --action")
    with db() as session:
        targets = None
        if target:  # a job and the model released from it are one story: show both
            targets = {target} if exact else ReleaseRepository.for_operator(session).related_ids(target)
        records = AuditRepository(session).matching(targets=targets, actor=actor, action=action, limit=limit)
        rows = _table_rows(records)
    render(rows, COLUMNS, as_json=as_json, title=f"audit: {target or actor or action}", empty="no matching records")


@app.command("export")
@handle_errors
def export(
    since: Annotated[
        str | None, typer.Option("--since", help="ISO 8601 date/datetime or unix time (inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="ISO 8601 date/datetime or unix time (exclusive).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Records as JSON lines (every field, hashes included), oldest first."""
    start = parse_when(since) if since else None
    end = parse_when(until) if until else None
    out = output.open("w", encoding="utf-8") if output else None
    n = 0
    try:
        with db() as session:
            for rec in AuditRepository(session).walk(since=start, until=end):
                line = json.dumps(record_dict(rec), separators=(",", ":"), default=str)
                if out:
                    out.write(line + "\n")
                else:
                    typer.echo(line)
                n += 1
    finally:
        if out:
            out.close()
    if output:
        err_console().print(f"exported {n} records to {output}")


def _counted(items: Iterable[R], progress: Progress, task: TaskID) -> Iterator[R]:
    for item in items:
        yield item
        progress.advance(task)


class _Last(Generic[R]):
    """Remembers the last item an iterator yielded (the chain's head after a full walk)."""

    last: R | None = None

    def track(self, items: Iterable[R]) -> Iterator[R]:
        for item in items:
            self.last = item
            yield item


class _Row:
    """An exported record read back, shaped like :class:`AuditRecord` for verification (a
    missing field raises AttributeError when read)."""

    seq: int
    created_at: float
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def __init__(self, data: dict[str, Any]):
        self.__dict__.update(data)


def _read_export(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield _Row(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise fail(f"{path}:{lineno}: not JSON ({exc.msg})") from None


@app.command("anchor")
@handle_errors
def anchor(
    fill: Annotated[
        bool,
        typer.Option(
            "--fill",
            help="Also anchor every grid record without one (after a store outage, or a new "
            "GUARDTUNE_AUDIT_ANCHOR_EVERY); the chain must verify first.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Anchor the chain's head now (every commit that appends records anchors its head; this
    is for a head whose anchor write failed). Keep the printed hash elsewhere too, for `audit
    verify --expect-head`. Writes no audit record (that would move the head)."""
    with db() as session:
        head = AuditRepository(session).head()
        if head is None:
            raise fail("the audit log is empty: nothing to anchor")
        written = _fill(session) if fill else anchors.write_missing([(head.seq, head.hash)])
    rows = [
        {"seq": a.seq, "hash": a.hash, "created_at": a.created_at, "key": anchors.anchor_key(a.seq)} for a in written
    ]
    if as_json:
        echo_json({"head_seq": head.seq, "head_hash": head.hash, "written": rows})
        return
    for row in rows:
        console().print(f"anchored seq {row['seq']} hash {row['hash']} ({row['key']})")
    console().print(f"head seq {head.seq} hash {head.hash}: {len(rows)} anchors written, the others existed")


def _fill(session: Session) -> list[anchors.Anchor]:
    """Anchors for every grid record and the head that lack one, if the chain verifies."""
    every, due = get_settings().audit_anchor_every, {}

    def noting_grid(records: Iterable[AuditRecord]) -> Iterator[AuditRecord]:
        prev_seq = 0
        for rec in records:
            if anchors.crosses_grid(prev_seq, rec.seq, every):
                due[rec.seq] = rec.hash
            prev_seq = rec.seq
            yield rec

    seen: _Last[AuditRecord] = _Last()
    result = audit_log.verify(seen.track(noting_grid(AuditRepository(session).walk())))
    if not result.ok:
        raise fail(f"audit chain broken at seq {result.broken_seq}: {result.reason}; nothing anchored")
    if seen.last is not None:
        due[seen.last.seq] = seen.last.hash
    return anchors.write_missing(sorted(due.items()))


def _expect_head_problem(hashes: Container[str], expected: str, last: audit_log.Chained | None) -> str | None:
    """``expected`` (a head saved earlier) must still be in the chain; later records may follow."""
    if expected in hashes:
        return None
    head = last.hash if last is not None else "none (empty)"
    return f"the expected head {expected} is not in the chain (head now {head}): truncated or rewritten"


@app.command("verify")
@handle_errors
def verify(
    file: Annotated[
        Path | None, typer.Option("--file", help="Verify an `audit export` JSONL file instead of the database.")
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="HASH",
            help="A head hash saved earlier (e.g. from `audit anchor`); it must still be in the chain.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the hash chain; exit 1 naming the first record that does not fit. On the
    database, also check the table against the signed anchors (every grid anchor and the
    head's present and matching, none beyond the table's end or deleted: see
    core.audit.anchor_check) and, with ``--expect-head``, that a saved head is still there."""
    anchored_at, anchor_seq, problem, problems = None, None, None, []
    with progress_bar() as progress:
        if file is not None:
            if not file.is_file():
                raise fail(f"{file}: no such file")
            rows = list(_read_export(file))
            first_prev = rows[0].prev_hash if rows else audit_log.GENESIS
            if rows and first_prev != audit_log.GENESIS:
                anchored_at = rows[0].seq
            task = progress.add_task("verifying export", total=len(rows))
            seen: _Last[audit_log.Chained] = _Last()
            result = audit_log.verify(seen.track(_counted(rows, progress, task)), first_prev)
            last = seen.last if result.ok else None
            if result.ok and expect_head:
                problem = _expect_head_problem({r.hash for r in rows}, expect_head, last)
        else:
            with db() as session:
                repo = AuditRepository(session)
                task = progress.add_task("verifying audit chain", total=repo.count())
                seen = _Last()
                check = AnchorCheck(get_settings(), get_store())
                result = audit_log.verify(seen.track(check.feed(_counted(repo.walk(), progress, task))))
                last = seen.last if result.ok else None
                if result.ok:
                    problems = check.finish(last)
                    problem, anchor_seq = (problems[0] if problems else None), check.newest_matched
                if result.ok and not problem and expect_head:
                    found = repo.has_hash(expect_head)
                    problem = _expect_head_problem({expect_head} if found else set(), expect_head, last)

    summary = {
        "ok": result.ok,
        "checked": result.checked,
        "broken_seq": result.broken_seq,
        "reason": result.reason,
        "head_seq": last.seq if (result.ok and last) else None,
        "head_hash": last.hash if (result.ok and last) else None,
        "anchored_at_seq": anchored_at,
        "anchor_seq": anchor_seq,
        "problem": problem,
        "problems": problems,
    }
    if as_json:
        echo_json(summary)
    elif result.ok and not problem:
        where = f" (export starts at seq {anchored_at}, anchored on its prev_hash)" if anchored_at else ""
        head = f"; head seq {summary['head_seq']} hash {summary['head_hash']}" if last else ""
        signed = f"; matches the signed anchor at seq {anchor_seq}" if anchor_seq else ""
        console().print(f"[green]audit chain intact[/green]: {result.checked} records verified{head}{signed}{where}")
    if result.ok and problem:
        if as_json:
            raise typer.Exit(1)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise fail(f"audit log check failed: {problem}{more}")
    if not result.ok:
        message = f"audit chain broken at seq {result.broken_seq}: {result.reason} ({result.checked - 1} records before it verified)"
        if as_json:
            raise typer.Exit(1)
        raise fail(message)
