"""``guardtune-ops orgs``: create, list and delete organizations, set the safety modes one may use
and its weight in the fair share of the GPU workers."""

from __future__ import annotations

from typing import Annotated

import typer

from core.errors import InvalidRequest
from core.jobs.vocab import SafetyMode
from core.models import Organization
from core.orgs.purge import purge_org
from core.orgs.repository import OrgRepository
from core.orgs.service import OrgService
from core.settings import get_settings
from ops.common import ActorOpt, db, ops_actor
from ops.output import JsonOpt, handle_errors, render, render_record

app = typer.Typer(help="Organizations.", no_args_is_help=True)


def org_dict(org: Organization) -> dict:
    return {
        "id": org.id,
        "name": org.name,
        "created_at": org.created_at,
        "max_concurrent_jobs": org.max_concurrent_jobs,
        "max_storage_bytes": org.max_storage_bytes,
        "allowed_modes": org.allowed_modes,
        "gpu_weight": org.gpu_weight,
    }


@app.command("create")
@handle_errors
def create(
    name: Annotated[str, typer.Argument(help="Organization name (unique).")],
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an organization."""
    with db() as session:
        org = OrgService(session, get_settings()).create(name, actor=ops_actor(actor))
        out = org_dict(org)
    render_record(out, as_json=as_json, title="organization created")


@app.command("allow-modes")
@handle_errors
def allow_modes(
    org_ref: Annotated[str, typer.Argument(metavar="ORG", help="Organization id or name.")],
    modes: Annotated[
        list[str] | None,
        typer.Argument(help=f"Safety modes its customer keys may ask ({', '.join(SafetyMode)}).", show_default=False),
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Forget the override: the deployment's GUARDTUNE_ALLOWED_MODES.")
    ] = False,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the safety modes an organization's customer keys may ask (admin keys may ask any),
    as the admin API's PATCH /v1/admin/organizations/{id} does; audited as org.update."""
    if default == bool(modes):
        raise InvalidRequest("give the modes, or --default (not both)", param="modes")
    unknown = sorted(set(modes or ()) - set(SafetyMode))
    if unknown:
        raise InvalidRequest(
            f"unknown safety mode(s) {', '.join(unknown)}; choose from {', '.join(SafetyMode)}",
            param="modes",
        )
    with db() as session:
        service = OrgService(session, get_settings())
        org = service.find(org_ref)
        allowed = list(dict.fromkeys(modes)) if modes else None
        service.update(org, {"allowed_modes": allowed}, actor=ops_actor(actor))
        out = org_dict(org)
    render_record(out, as_json=as_json, title="organization updated")


MAX_GPU_WEIGHT = 1000


@app.command("gpu-weight")
@handle_errors
def gpu_weight(
    org_ref: Annotated[str, typer.Argument(metavar="ORG", help="Organization id or name.")],
    weight: Annotated[
        int | None,
        typer.Argument(
            help=f"Its weight, 1 to {MAX_GPU_WEIGHT} (every organization's default is 1).", show_default=False
        ),
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Forget the override: weight 1.")] = False,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an organization's weight in the fair share of the GPU workers (core/dispatch.py): one
    of weight 2 gets up to twice the GPU stages in flight, and twice the GPU seconds, of one of
    weight 1 while both have stages waiting; audited as org.update."""
    if default == (weight is not None):
        raise InvalidRequest("give the weight, or --default (not both)", param="weight")
    if weight is not None and not 1 <= weight <= MAX_GPU_WEIGHT:
        raise InvalidRequest(f"the weight must be 1 to {MAX_GPU_WEIGHT}, not {weight}", param="weight")
    with db() as session:
        service = OrgService(session, get_settings())
        org = service.find(org_ref)
        service.update(org, {"gpu_weight": weight}, actor=ops_actor(actor))
        out = org_dict(org)
    render_record(out, as_json=as_json, title="organization updated")


@app.command("list")
@handle_errors
def list_(as_json: JsonOpt = False) -> None:
    """List organizations with their active keys and jobs."""
    with db() as session:
        orgs = OrgRepository(session)
        keys, jobs = orgs.active_key_counts(), orgs.job_counts()
        rows = [
            {**org_dict(org), "active_keys": keys.get(org.id, 0), "jobs": jobs.get(org.id, 0)}
            for org in orgs.by_creation()
        ]
    render(
        rows,
        ["id", "name", "created_at", "active_keys", "jobs"],
        as_json=as_json,
        title="organizations",
        empty="no organizations",
    )


@app.command("delete")
@handle_errors
def delete(
    org_ref: Annotated[str, typer.Argument(metavar="ORG", help="Organization id or name.")],
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Required: every row and stored object of the organization goes, for good."),
    ] = False,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Offboard an organization: delete its keys, files, jobs, reports, released models and
    every stored object under orgs/<id>/ (audited as org.purge; the audit log stays).
    Refused while it has unfinished jobs."""
    if not purge:
        raise InvalidRequest("deleting an organization deletes all its data: pass --purge to confirm", param="purge")
    with db() as session:
        result = purge_org(session, org_ref, actor=ops_actor(actor))
    out = {
        "id": result.org_id,
        "name": result.name,
        "rows_deleted": result.rows,
        "prefix": result.prefix,
        "objects": "deleted" if result.objects_deleted else "pending: the deletion sweep retries",
    }
    render_record(out, as_json=as_json, title="organization purged")
