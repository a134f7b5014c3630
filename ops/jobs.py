"""``guardtune-ops jobs``: list jobs and inspect one (stages, events, safety report)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import func, select

from core.errors import NotFound
from core.jobs.vocab import TERMINAL, JobStage, JobStatus
from core.models import Checkpoint, Job, JobEvent, Organization, SafetyReport
from core.orgs.service import OrgService
from core.releases.repository import ReleaseRepository
from core.settings import get_settings
from ops.common import db
from ops.output import JsonOpt, console, fmt_time, fmt_value, handle_errors, render, render_record

app = typer.Typer(help="Fine-tuning jobs.", no_args_is_help=True)

STATUSES = tuple(JobStatus)


def job_dict(job: Job, org_name: str | None = None) -> dict[str, Any]:
    return {
        "id": job.id,
        "org_id": job.org_id,
        "org": org_name,
        "model": job.model,
        "status": job.status,
        "stage": job.stage,
        "created_by": job.created_by,
        "training_file": job.training_file_id,
        "validation_file": job.validation_file_id,
        "suffix": job.suffix,
        "method": job.method,
        "safety": job.safety,
        "hyperparameters": job.hyperparameters,
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "estimated_finish": job.estimated_finish,
    }


@app.command("list")
@handle_errors
def list_(
    org: Annotated[str | None, typer.Option("--org", help="Organization id or name.")] = None,
    status: Annotated[str | None, typer.Option("--status", help=f"One of {', '.join(STATUSES)}.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest N jobs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"status must be one of {', '.join(STATUSES)}", param_hint="--status")
    with db() as session:
        query = select(Job, Organization.name).join(Organization, Organization.id == Job.org_id)
        if org is not None:
            query = query.where(Job.org_id == OrgService(session, get_settings()).find(org).id)
        if status is not None:
            query = query.where(Job.status == status)
        rows = [job_dict(j, name) for j, name in session.execute(query.order_by(Job.seq.desc()).limit(limit))]
    for row in rows:
        row["error_code"] = (row["error"] or {}).get("code")
    render(
        rows,
        ["id", "org", "model", "status", "stage", "error_code", "fine_tuned_model", "created_at"],
        as_json=as_json,
        title="jobs",
        empty="no jobs",
    )


def flatten(data: Any, prefix: str = "", depth: int = 3) -> dict[str, Any]:
    """Scalars (and short scalar lists) of a nested report as ``a.b.c: value``."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and depth > 1:
                out.update(flatten(value, name, depth - 1))
            elif isinstance(value, list):
                if len(value) <= 6 and all(not isinstance(v, (dict, list)) for v in value):
                    out[name] = value
                else:
                    out[name] = f"[{len(value)} items]"
            elif not isinstance(value, dict):
                out[name] = value
    return out


def _report_dict(report: SafetyReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "scan": report.scan,
        "training": report.training,
        "evaluation": report.evaluation,
        "gate": report.gate,
        "updated_at": report.updated_at,
    }


def _stage_table(job: Job) -> Table:
    """The lifecycle as a row of steps, marking the current status/stage."""
    t = Table(show_header=False, box=None, padding=(0, 1))
    steps = [JobStatus.VALIDATING_FILES, JobStatus.QUEUED, *JobStage, "done"]
    order = {name: i for i, name in enumerate(steps)}
    if job.status in TERMINAL:
        current = order["done"]
    elif job.status == JobStatus.RUNNING:
        current = order.get(job.stage or JobStage.SCANNING, order[JobStage.SCANNING])
    else:
        current = order.get(job.status, 0)
    cells = []
    for i, name in enumerate(steps):
        label = job.status if name == "done" and i == current else name
        if i < current:
            cells.append(f"[green]✓ {label}[/green]")
        elif i == current:
            colours: dict[str, str] = {
                JobStatus.SUCCEEDED: "green",
                JobStatus.FAILED: "red",
                JobStatus.CANCELLED: "yellow",
            }
            colour = colours.get(job.status, "cyan")
            cells.append(f"[bold {colour}]● {label}[/bold {colour}]")
        else:
            cells.append(f"[dim]○ {label}[/dim]")
    t.add_row(*cells)
    return t


@app.command("show")
@handle_errors
def show(
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-…).")],
    events: Annotated[int, typer.Option("--events", "-n", min=0, help="How many of the latest events.")] = 15,
    as_json: JsonOpt = False,
) -> None:
    """One job: its stages, the tail of its events and its safety report summary."""
    with db() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        org = session.get(Organization, job.org_id)
        tail = list(
            session.scalars(
                select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.seq.desc()).limit(events)
            )
        )[::-1]
        n_events = session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job.id))
        checkpoints = list(
            session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step))
        )
        released = ReleaseRepository(session, job.org_id).of_job(job.id)
        report = _report_dict(session.get(SafetyReport, job.id))
        out = job_dict(job, org.name if org else None)
        out["events"] = [
            {
                "seq": e.seq,
                "id": e.id,
                "created_at": e.created_at,
                "level": e.level,
                "type": e.type,
                "message": e.message,
                "data": e.data,
            }
            for e in tail
        ]
        out["events_total"] = n_events
        out["checkpoints"] = [
            {"id": c.id, "step": c.step, "metrics": c.metrics, "created_at": c.created_at} for c in checkpoints
        ]
        out["released_model"] = (
            None
            if released is None
            else {
                "id": released.id,
                "sha256": released.sha256,
                "storage_prefix": released.storage_prefix,
                "created_at": released.created_at,
                "revoked_at": released.revoked_at,
                "revoke_reason": released.revoke_reason,
            }
        )
        out["safety_report"] = report

    if as_json:
        render_record(out, as_json=True)
        return
    c = console()
    summary = {
        k: out[k]
        for k in (
            "id",
            "org",
            "org_id",
            "model",
            "status",
            "stage",
            "created_by",
            "training_file",
            "suffix",
            "fine_tuned_model",
            "trained_tokens",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        )
    }
    summary["method"] = out["method"]
    summary["safety"] = out["safety"]
    if out["error"]:
        summary["error"] = f"{out['error'].get('code')}: {out['error'].get('message')}"
    render_record(summary, as_json=False, title=f"job {job.id}")
    c.print(Panel(_stage_table(job), title="stages", expand=False))

    if out["released_model"]:
        render_record(out["released_model"], as_json=False, title="released model")
    if checkpoints:
        c.print(f"checkpoints: {len(checkpoints)} (last at step {checkpoints[-1].step})")

    et = Table(title=f"events (last {len(tail)} of {n_events})", header_style="bold")
    for col in ("time", "level", "type", "message", "metrics"):
        et.add_column(col, overflow="fold")
    for e in out["events"]:
        metrics = e["data"] if e["type"] == "metrics" else None
        et.add_row(fmt_time(e["created_at"]), e["level"], e["type"], e["message"], fmt_value(metrics))
    c.print(et)

    if report is None:
        c.print("[dim]no safety report yet[/dim]")
        return
    rt = Table(title="safety report", header_style="bold")
    rt.add_column("section", style="bold")
    rt.add_column("field")
    rt.add_column("value", overflow="fold")
    for section in ("scan", "training", "evaluation", "gate"):
        flat = flatten(report.get(section) or {})
        if not flat:
            rt.add_row(section, "", "[dim]—[/dim]")
        for i, (key, value) in enumerate(flat.items()):
            rt.add_row(section if i == 0 else "", key, fmt_value(value))
    c.print(rt)
