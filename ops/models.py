"""``guardtune-ops models``: the base-model registry and onboarding."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy import select

from core.audit import service as audit
from core.models import BaseModelEntry
from core.releases.repository import ReleaseRepository
from core.vocab import BaseModelStatus
from ops.common import ActorOpt, db, ops_actor
from ops.output import JsonOpt, console, err_console, fail, handle_errors, progress_bar, render, render_record

if TYPE_CHECKING:
    from safety.train_metrics import StepMetrics

app = typer.Typer(help="Base models: list, onboard, align.", no_args_is_help=True)

ONBOARD_MODULE = "worker.pipeline.onboard"
ONBOARD_FUNCTION = "onboard_base_model"
ALIGN_MODULE = "worker.pipeline.align"
ALIGN_FUNCTION = "align_base_model"


def entry_dict(entry: BaseModelEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "source": entry.source,
        "status": entry.status,
        "context_length": entry.context_length,
        "probe_prefix": entry.probe_prefix,
        "baseline": entry.baseline,
        "created_at": entry.created_at,
    }


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
        serving = ReleaseRepository.for_operator(session).serving_per_base()
        rows = [
            {**entry_dict(e), "released_adapters": serving.get(e.id, 0)}
            for e in session.scalars(select(BaseModelEntry).order_by(BaseModelEntry.id))
        ]
    if as_json:
        render(rows, [], as_json=True)
        return
    for row in rows:
        row["baseline_summary"] = _baseline_summary(row["baseline"])
    render(
        rows,
        ["id", "status", "source", "context_length", "probe_prefix", "baseline_summary", "released_adapters"],
        as_json=False,
        title="base models",
        empty="no base models registered",
    )


def _load_pipeline(module_name: str = ONBOARD_MODULE, function: str = ONBOARD_FUNCTION):
    """A pipeline function (onboarding, alignment), imported only when asked for (it pulls torch)."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise fail(f"this is not available in this install: {module_name} is missing") from None
        raise
    func_ = getattr(module, function, None)
    if func_ is None:
        raise fail(f"this is not available: {module_name}.{function} is missing")
    return func_


@contextmanager
def _failure_audited(who: str, action: str, name: str, doing: str) -> Iterator[None]:
    """Run the block; if it raises, record ``action`` on ``name`` by ``who`` in the audit log,
    print the traceback and fail the command with "``doing`` ``name`` failed: …"."""
    try:
        yield
    except Exception as exc:
        with db() as session:
            audit.record(
                session, actor=who, action=action, target=name, details={"error": f"{type(exc).__name__}: {exc}"}
            )
        err_console().print(traceback.format_exc(), markup=False)
        raise fail(f"{doing} {name} failed: {exc}") from None


def _align(name: str, who: str, *, onboard: bool) -> dict[str, Any]:
    """Run the pipeline's alignment of ``name`` (audited there); a failure is audited here."""
    align_fn = _load_pipeline(ALIGN_MODULE, ALIGN_FUNCTION)
    with _failure_audited(who, "model.align_failed", name, "aligning"), progress_bar() as progress:
        then = "; then onboarding" if onboard else ""
        bar = progress.add_task(f"aligning {name} (refusal training steps{then})", total=None)

        def on_step(metrics: StepMetrics) -> None:
            progress.update(bar, completed=metrics.step, total=metrics.total_steps)

        return align_fn(name, actor=who, onboard=onboard, on_step=on_step)


@app.command("align")
@handle_errors
def align(
    name: Annotated[str, typer.Argument(help="Registered base model to safety-tune.")],
    onboard_variant: Annotated[
        bool, typer.Option("--onboard/--no-onboard", help="Onboard the aligned variant too.")
    ] = True,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Safety-tune NAME into a registered variant NAME-aligned (refusals for harmful prompts,
    helpful answers for benign ones, refusals that recover after a few harmful tokens); the
    merged weights are cached, so a second call reuses them. Where the project ships NAME's
    aligned adapter for the same recipe it is merged instead of trained
    (GUARDTUNE_ALIGN_PREBUILT=false trains)."""
    result = _align(name, ops_actor(actor), onboard=onboard_variant)
    if as_json:
        render_record(result, as_json=True)
        return
    report = result["report"]
    render_record(
        {
            "model": result["model"],
            "from": result["from"],
            "path": result["path"],
            "origin": result["origin"],
            **report["examples"],
            "steps": report["steps"],
            "seconds": report["seconds"],
        },
        as_json=False,
        title=f"aligned variant of {name}",
    )
    if "onboard" in result:
        render_record(
            {k: v for k, v in result["onboard"].items() if k != "model"}, as_json=False, title="onboarding result"
        )
    console().print(f"[green]{result['model']}: registered[/green]")


@app.command("onboard")
@handle_errors
def onboard(
    name: Annotated[str, typer.Argument(help="Base model name (registry id).")],
    source: Annotated[
        str | None, typer.Option("--source", help="Register NAME first, loading from this local path or HF id.")
    ] = None,
    align_first: Annotated[
        bool,
        typer.Option("--align", help="Also safety-tune NAME into NAME-aligned and onboard that (see `models align`)."),
    ] = False,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Onboard a base model: train its probe, measure its baseline ASR and over-refusal, cache both."""
    who = ops_actor(actor)
    onboard_fn = _load_pipeline()
    with db() as session:
        entry = session.get(BaseModelEntry, name)
        if entry is None:
            if source is None:
                raise fail(f"no base model {name!r} in the registry; pass --source PATH_OR_HF_ID to register it")
            entry = BaseModelEntry(id=name, source=source, status=BaseModelStatus.REGISTERED)
            session.add(entry)
            session.flush()
            audit.record(session, actor=who, action="model.register", target=name, details={"source": source})
        elif source is not None and source != entry.source:
            raise fail(f"{name} is registered with source {entry.source!r}, not {source!r}")

    # The pipeline's function audits its own success in its transaction when it takes an
    # actor; otherwise the CLI records the outcome right after it committed.
    audits_itself = "actor" in inspect.signature(onboard_fn).parameters
    kwargs: dict[str, Any] = {"actor": who} if audits_itself else {}
    with _failure_audited(who, "model.onboard_failed", name, "onboarding"):
        with err_console().status(f"onboarding {name} (probe training and baseline evaluation)…"):
            result = onboard_fn(name, **kwargs)

    with db() as session:
        entry = session.get(BaseModelEntry, name)
        out = entry_dict(entry) if entry else {"id": name}
        if not audits_itself:
            details = {
                "status": out.get("status"),
                "probe_prefix": out.get("probe_prefix"),
                "baseline": out.get("baseline"),
            }
            if isinstance(result, dict):
                details["result"] = result
            audit.record(session, actor=who, action="model.onboard", target=name, details=details)
    aligned = _align(name, who, onboard=True) if align_first else None
    if as_json:
        render_record({**out, "result": result if isinstance(result, dict) else None, "aligned": aligned}, as_json=True)
        return
    render_record({k: v for k, v in out.items() if k != "baseline"}, as_json=False, title=f"base model {name}")
    if aligned is not None:
        render_record(
            {"model": aligned["model"], "origin": aligned["origin"], **aligned["onboard"]["baseline"]},
            as_json=False,
            title="aligned variant",
        )
    if isinstance(result, dict):
        render_record({k: v for k, v in result.items() if k != "model"}, as_json=False, title="onboarding result")
    console().print(f"[green]{name}: {out.get('status')}[/green]")
