"""``guardtune-ops webhooks``: an organization's webhook endpoints (create, with the signing
secret shown once; list; delete) and an endpoint's delivery log."""

from __future__ import annotations

from typing import Annotated

import typer

from core.models import WebhookEndpoint
from core.orgs.service import OrgService
from core.settings import get_settings
from core.webhooks.endpoints import WebhookService
from ops.common import ActorOpt, db, ops_actor
from ops.output import JsonOpt, console, err_console, handle_errors, render, render_record

app = typer.Typer(help="Webhook endpoints and their delivery log.", no_args_is_help=True)

OrgOpt = Annotated[str, typer.Option("--org", help="Organization id or name.")]


def endpoint_dict(endpoint: WebhookEndpoint) -> dict:
    return {"id": endpoint.id, "org_id": endpoint.org_id, "url": endpoint.url, "created_at": endpoint.created_at}


def _service(session, org: str) -> WebhookService:
    return WebhookService(session, OrgService(session, get_settings()).find(org).id)


@app.command("create")
@handle_errors
def create(
    url: Annotated[str, typer.Argument(help="Where events are POSTed (http:// or https://).")],
    org: OrgOpt,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a webhook endpoint. Its signing secret is printed once and never again."""
    with db() as session:
        endpoint = _service(session, org).create(url, actor=ops_actor(actor))
        out = {**endpoint_dict(endpoint), "secret": endpoint.secret}
    if as_json:
        render_record(out, as_json=True)
        return
    render_record(endpoint_dict(endpoint), as_json=False, title="Webhook endpoint created")
    console().print(f"\n[bold]secret:[/bold] {out['secret']}")
    err_console().print("[yellow]Store it now: it is shown only once.[/yellow]")


@app.command("list")
@handle_errors
def list_(org: OrgOpt, as_json: JsonOpt = False) -> None:
    """List an organization's webhook endpoints (never their secrets)."""
    with db() as session:
        rows = [endpoint_dict(e) for e in _service(session, org).all()]
    render(
        rows, ["id", "url", "created_at"], as_json=as_json, title=f"Webhook endpoints of {org}", empty="no endpoints"
    )


@app.command("delete")
@handle_errors
def delete(
    endpoint_id: Annotated[str, typer.Argument(help="Endpoint id (we-…).")],
    org: OrgOpt,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a webhook endpoint with its delivery log (its pending deliveries are dropped)."""
    with db() as session:
        out = endpoint_dict(_service(session, org).delete(endpoint_id, actor=ops_actor(actor)))
    render_record({**out, "deleted": True}, as_json=as_json, title="Webhook endpoint deleted")


@app.command("deliveries")
@handle_errors
def deliveries(
    endpoint_id: Annotated[str, typer.Argument(help="Endpoint id (we-…).")],
    org: OrgOpt,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="Latest attempts shown.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """An endpoint's delivery log: its latest attempts, newest first."""
    with db() as session:
        found, _ = _service(session, org).attempts(endpoint_id, limit=limit)
        rows = [
            {
                "created_at": attempt.created_at,
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
                "job_id": delivery.job_id,
                "attempt": attempt.attempt,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "delivery_status": delivery.status,
            }
            for attempt, delivery in found
        ]
    columns = ["created_at", "event_type", "job_id", "attempt", "status_code", "error", "delivery_status"]
    render(rows, columns, as_json=as_json, title=f"Deliveries to {endpoint_id}", empty="no attempts yet")
