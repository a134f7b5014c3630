"""``guardtune-ops keys``: create (shown once), list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from core import orgs as org_service
from core.models import ApiKey
from core.settings import get_settings
from core.vocab import KeyScope
from ops.common import ActorOpt, db, ops_actor
from ops.output import JsonOpt, console, err_console, handle_errors, render, render_record

app = typer.Typer(help="API keys.", no_args_is_help=True)


def key_dict(key: ApiKey) -> dict:
    return {
        "id": key.id,
        "org_id": key.org_id,
        "name": key.name,
        "prefix": key.prefix,
        "scope": key.scope,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


@app.command("create")
@handle_errors
def create(
    org: Annotated[str, typer.Option("--org", help="Organization id or name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Admin scope (the admin API).")] = False,
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. Its secret is printed once and never again."""
    with db() as session:
        key, plaintext = org_service.create_key(
            session,
            org,
            actor=ops_actor(actor),
            secret=get_settings().secret_key,
            scope=KeyScope.ADMIN if admin else KeyScope.CUSTOMER,
            name=name,
        )
        out = {**key_dict(key), "key": plaintext}
    if as_json:
        render_record(out, as_json=True)
        return
    render_record({k: v for k, v in out.items() if k != "key"}, as_json=False, title="API key created")
    console().print(f"\n[bold]key:[/bold] {plaintext}")
    err_console().print("[yellow]Store it now: it is shown only once.[/yellow]")


@app.command("list")
@handle_errors
def list_(
    org: Annotated[str, typer.Option("--org", help="Organization id or name.")],
    as_json: JsonOpt = False,
) -> None:
    """List an organization's keys (prefixes only; secrets are never stored)."""
    with db() as session:
        rows = [key_dict(k) for k in org_service.list_keys(session, org)]
    render(
        rows,
        ["id", "prefix", "scope", "name", "created_at", "last_used_at", "revoked_at"],
        as_json=as_json,
        title=f"API keys of {org}",
        empty="no keys",
    )


@app.command("revoke")
@handle_errors
def revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (key-…).")],
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: it stops authenticating at once."""
    with db() as session:
        out = key_dict(org_service.revoke_key(session, key_id, actor=ops_actor(actor)))
    render_record(out, as_json=as_json, title="API key revoked")
