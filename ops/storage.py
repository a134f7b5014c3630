"""``guardtune-ops storage``: the stored objects whose deletion is still pending."""

from __future__ import annotations

import typer
from sqlalchemy import select

from core import deletion
from core.models import PendingDeletion
from ops.common import db
from ops.output import JsonOpt, handle_errors, render, render_record

app = typer.Typer(help="Object storage: deletions left to the sweep.", no_args_is_help=True)


@app.command("pending")
@handle_errors
def pending(as_json: JsonOpt = False) -> None:
    """Deletions that failed after their retries, oldest first (the sweep retries them)."""
    with db() as session:
        rows = [
            {
                "id": row.id,
                "key": row.key,
                "prefix": row.prefix,
                "reason": row.reason,
                "attempts": row.attempts,
                "last_error": row.last_error,
                "created_at": row.created_at,
            }
            for row in session.scalars(select(PendingDeletion).order_by(PendingDeletion.id))
        ]
    render(rows, ["id", "key", "prefix", "reason", "attempts", "last_error"], as_json=as_json, empty="nothing pending")


@app.command("sweep")
@handle_errors
def sweep(as_json: JsonOpt = False) -> None:
    """Retry the pending deletions now (the worker also does, every GUARDTUNE_REAPER_INTERVAL_S)."""
    with db() as session:
        result = deletion.sweep(session)
    render_record({"deleted": result.deleted, "failed": result.failed}, as_json=as_json, title="deletion sweep")
