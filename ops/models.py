"""``guardtune-ops models``: the base-model registry and onboarding."""

from __future__ import annotations

import inspect
import traceback
from typing import Annotated, Any

import typer
from sqlalchemy import func, select

from core import audit
from core.models import BaseModelEntry, ReleasedModel
from ops.common import ActorOpt, db, ops_actor
from ops.output import JsonOpt, console, err_console, fail, handle_errors, render, render_record

app = typer.Typer(help="Base models: list, onboard.", no_args_is_help=True)

ONBOARD_MODULE = "worker.pipeline.onboard"
ONBOARD_FUNCTION = "onboard_base_model"


def entry_dict(entry: BaseModelEntry) -> dict[str, Any]:
    return {"id": entry.id, "source": entry.source, "status": entry.status, "context_length": entry.context_length,
            "probe_prefix": entry.probe_prefix, "baseline": entry.baseline, "created_at": entry.created_at}  # fmt: skip


def _baseline_summary(baseline: dict[str, Any] | None) -> str:
    if not baseline:
        return ""
    parts = []
    for key, value in sorted(baseline.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{key}={value:.3g}")
    return " ".join(parts[:4])


@app.command("list")
@handle_errors
def list_(as_json: JsonOpt = False) -> None:
    """Base models jobs may name, with their onboarding status."""
    with db() as session:
        serving = dict(session.execute(
            select(ReleasedModel.base_model, func.count()).where(ReleasedModel.revoked_at.is_(None))
            .group_by(ReleasedModel.base_model)
        ).all())  # fmt: skip
        rows = [{**entry_dict(e), "released_adapters": serving.get(e.id, 0)}
                for e in session.scalars(select(BaseModelEntry).order_by(BaseModelEntry.id))]  # fmt: skip
    if as_json:
        render(rows, [], as_json=True)
        return
    for row in rows:
        row["baseline_summary"] = _baseline_summary(row["baseline"])
    render(rows, ["id", "status", "source", "context_length", "probe_prefix", "baseline_summary", "released_adapters"],
           as_json=False, title="base models", empty="no base models registered")  # fmt: skip


def _load_onboard():
    """The pipeline's onboarding function, imported only when asked for (it pulls torch)."""
    import importlib

    try:
        module = importlib.import_module(ONBOARD_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and ONBOARD_MODULE.startswith(exc.name):
            raise fail(f"onboarding is not available in this install: {ONBOARD_MODULE} is missing") from None
        raise
    func_ = getattr(module, ONBOARD_FUNCTION, None)
    if func_ is None:
        raise fail(f"onboarding is not available: {ONBOARD_MODULE}.{ONBOARD_FUNCTION} is missing")
    return func_


@app.command("onboard")
@handle_errors
def onboard(
    name: Annotated[str, typer.Argument(help="Base model name (registry id).")],
    source: Annotated[str | None, typer.Option("--source", help="Register NAME first, loading from this local path or HF id.")] = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Onboard a base model: train its probe, measure its baseline ASR and over-refusal, cache both."""
    who = ops_actor(actor)
    onboard_fn = _load_onboard()
    with db() as session:
        entry = session.get(BaseModelEntry, name)
        if entry is None:
            if source is None:
                raise fail(f"no base model {name!r} in the registry; pass --source PATH_OR_HF_ID to register it")
            entry = BaseModelEntry(id=name, source=source, status="registered")
            session.add(entry)
            session.flush()
            audit.record(session, actor=who, action="model.register", target=name, details={"source": source})
        elif source is not None and source != entry.source:
            raise fail(f"{name} is registered with source {entry.source!r}, not {source!r}")

    # The pipeline's function audits its own success in its transaction when it takes an
    # actor; otherwise the CLI records the outcome right after it committed.
    audits_itself = "actor" in inspect.signature(onboard_fn).parameters
    kwargs: dict[str, Any] = {"actor": who} if audits_itself else {}
    try:
        with err_console().status(f"onboarding {name} (probe training and baseline evaluation)…"):
            result = onboard_fn(name, **kwargs)
    except Exception as exc:  # the failure itself is audited, then shown
        with db() as session:
            audit.record(session, actor=who, action="model.onboard_failed", target=name,
                         details={"error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
        err_console().print(traceback.format_exc(), markup=False)
        raise fail(f"onboarding {name} failed: {exc}") from None

    with db() as session:
        entry = session.get(BaseModelEntry, name)
        out = entry_dict(entry) if entry else {"id": name}
        if not audits_itself:
            details = {"status": out.get("status"), "probe_prefix": out.get("probe_prefix"),
                       "baseline": out.get("baseline")}  # fmt: skip
            if isinstance(result, dict):
                details["result"] = result
            audit.record(session, actor=who, action="model.onboard", target=name, details=details)
    if as_json:
        render_record({**out, "result": result if isinstance(result, dict) else None}, as_json=True)
        return
    render_record({k: v for k, v in out.items() if k != "baseline"}, as_json=False, title=f"base model {name}")
    if isinstance(result, dict):
        render_record({k: v for k, v in result.items() if k != "model"}, as_json=False, title="onboarding result")
    console().print(f"[green]{name}: {out.get('status')}[/green]")
