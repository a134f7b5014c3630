"""``guardtune-ops release``: override a blocked release, revoke a released model, list them."""

from __future__ import annotations

from typing import Annotated

import typer

from core.inference import adapter_ref, adapter_released, adapter_revoked
from core.models import ReleasedModel
from core.orgs.service import OrgService
from core.releases import service as releases
from core.releases.repository import ReleaseRepository
from core.settings import get_settings
from ops.common import ActorOpt, db, ops_actor
from ops.output import JsonOpt, console, handle_errors, render, render_record

app = typer.Typer(help="Released adapters: approve a blocked job, revoke a model.", no_args_is_help=True)

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")]


def released_dict(m: ReleasedModel) -> dict:
    return {
        "id": m.id,
        "job_id": m.job_id,
        "org_id": m.org_id,
        "base_model": m.base_model,
        "sha256": m.sha256,
        "storage_prefix": m.storage_prefix,
        "created_at": m.created_at,
        "revoked_at": m.revoked_at,
        "revoke_reason": m.revoke_reason,
        "status": "revoked" if m.revoked_at else "serving",
    }


@app.command("approve")
@handle_errors
def approve(
    job_id: Annotated[str, typer.Argument(help="A job blocked by the safety gate (ftjob-…).")],
    reason: ReasonOpt,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Override the safety gate for a blocked job: release its stored adapter."""
    with db() as session:
        released = releases.approve_blocked_job(session, job_id, actor=ops_actor(actor), reason=reason)
        out, adapter = released_dict(released), adapter_ref(released)
    adapter_released(adapter)
    render_record(out, as_json=as_json, title="released by override")
    if not as_json:
        console().print(f"[yellow]{job_id} released as {out['id']} overriding the gate[/yellow]")


@app.command("revoke")
@handle_errors
def revoke(
    model_id: Annotated[str, typer.Argument(help="A released model (ft:…).")],
    reason: ReasonOpt,
    keep_files: Annotated[
        bool,
        typer.Option(
            "--keep-files", help="Keep the job's stored objects and checkpoints (a hold for an investigation)."
        ),
    ] = False,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop serving a released adapter and delete the stored objects of the job that made it
    (adapter, checkpoints, artifacts), unless --keep-files."""
    with db() as session:
        revoked = releases.revoke_model(session, model_id, actor=ops_actor(actor), reason=reason, keep_files=keep_files)
        out = released_dict(revoked)
        session.commit()
        adapter_revoked(model_id)
        if not keep_files:
            releases.delete_model_files(session, revoked)
    render_record(out, as_json=as_json, title="model revoked")


@app.command("list")
@handle_errors
def list_(
    org: Annotated[str | None, typer.Option("--org", help="Organization id or name.")] = None,
    revoked: Annotated[bool | None, typer.Option("--revoked/--serving", help="Only revoked, or only serving.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Released models, newest first."""
    with db() as session:
        if org is None:
            repo = ReleaseRepository.for_operator(session)
        else:
            repo = ReleaseRepository(session, OrgService(session, get_settings()).find(org).id)
        rows = [released_dict(m) for m in repo.newest_first(revoked=revoked)]
    render(
        rows,
        ["id", "status", "job_id", "sha256", "created_at", "revoked_at", "revoke_reason"],
        as_json=as_json,
        title="released models",
        empty="no released models",
    )
