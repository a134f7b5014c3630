"""``guardtune demo``: the whole product on the embedded stack, as a customer sees it.

Starts ``guardtune serve`` (API + worker), aligns the default base model into its
``-aligned`` variant (``guardtune-ops models align``: the shipped aligned adapter merged, or
trained where none matches; cached after the first run) and onboards that variant (once: a
later run with the cached variant reuses its onboarding), creates an organization and key,
uploads the shipped demo dataset (benign chats with a few planted harmful requests) over the
API and fine-tunes the aligned variant on it twice: ``adaptive`` (guardtune's default;
expected: released) and ``none`` (standard SFT, which the operator enables for the demo org;
expected: blocked by the gate).
Prints both safety reports side by side, asks the released model one question through
``chat.completions``, prints where the time went (``phase_times``) and the dashboard URL, and
leaves the server running. ``--report FILE`` also writes the outcome as JSON (``outcome``;
``bench/demo_time.py`` reads it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.demo_chat import ask_released_model
from core.db import session_scope
from core.errors import NotFound
from core.jobs.pipeline import GPU_QUEUE
from core.jobs.vocab import TERMINAL, JobStatus, SafetyMode
from core.models import BaseModelEntry
from core.orgs.service import OrgService
from core.queue import enqueue, producer
from core.settings import get_settings
from core.vocab import BaseModelStatus
from core.waiting import wait_http

console = Console()
DEMO_ORG = "demo"
# Training modes of the demo's two jobs, in order. ``none`` is standard SFT: where the operator
# restricts customer keys to regularized modes, the demo org is the operator's exception.
MODES = (SafetyMode.ADAPTIVE, SafetyMode.NONE)
DEMO_ALLOWED_MODES = (SafetyMode.ADAPTIVE, SafetyMode.CONSTANT, SafetyMode.NONE)
# The demo customer's hyperparameters: 3 epochs at 5x the base learning rate (1e-3). At the API's
# defaults (2 epochs, 2e-4) standard SFT on this file does not move the aligned 135M model
# (exploration: ASR 17% -> 12%), so the demo would show two releases; at these, `none` unlearns
# the refusals (17% -> 50%) while `adaptive` keeps them (17% -> 15%).
DEMO_EPOCHS = 3
DEMO_LR_MULTIPLIER = 5.0
ORIGINS = {"cached": "cached", "prebuilt": "merged from the shipped adapter", "trained": "trained now"}


DEMO_DATASET = Path(__file__).resolve().parent.parent / "examples" / "demo_train.jsonl"


def start_server(log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.guardtune", "serve"], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
    )


def wait_ready(base_url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    try:
        wait_http(f"{base_url}/readyz", timeout_s, server)
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"{exc}; see {get_settings().home_dir}/serve.log") from None


def align_and_onboard(model_id: str) -> dict:
    """The aligned variant (the worker's ``guardtune.gpu.align`` task), onboarded: by the
    worker's ``guardtune.gpu.onboard`` task, or, when the variant came from the cache and an
    earlier run onboarded it (``earlier_onboarding``), as that run left it. ``onboard_reused``
    says which."""
    with console.status(f"Aligning {model_id} (the shipped adapter, or refusal training; cached after the first run)…"):
        aligned = gpu_task_result("guardtune.gpu.align", model_id, False)
    earlier = earlier_onboarding(aligned)
    aligned["onboard_reused"] = earlier is not None
    if earlier is not None:
        aligned["onboard"] = earlier
        return aligned
    with console.status(f"Onboarding {aligned['model']}: training its probe, measuring its ASR…"):
        aligned["onboard"] = gpu_task_result("guardtune.gpu.onboard", aligned["model"])
    return aligned


def gpu_task_result(task: str, *args: object) -> dict:
    """Run worker task ``task`` on the GPU queue and wait (up to an hour) for its result."""
    return producer().AsyncResult(enqueue(task, *args, queue=GPU_QUEUE)).get(timeout=3600)


def earlier_onboarding(aligned: dict) -> dict | None:
    """The variant's onboarding from an earlier run, when its weights are those it was onboarded
    on (the alignment came from the cache: a new variant resets the row) and it is ready; None
    otherwise. (``guardtune-ops models onboard NAME`` re-onboards, e.g. after a settings change.)"""
    from worker.pipeline.onboard import onboarding_summary

    if aligned["origin"] != "cached":
        return None
    with session_scope() as session:
        entry = session.get(BaseModelEntry, aligned["model"])
        if entry is None or entry.status != BaseModelStatus.READY or not entry.probe_prefix or not entry.baseline:
            return None
        return onboarding_summary(entry)


def demo_key() -> str:
    settings = get_settings()
    with session_scope() as session:
        orgs = OrgService(session, settings)
        try:
            org = orgs.find(DEMO_ORG)
        except NotFound:
            org = orgs.create(DEMO_ORG, actor="ops:demo")
        if set(org.allowed_modes or ()) != set(DEMO_ALLOWED_MODES):
            # The operator opens standard SFT (`none`) to the demo org, as an admin PATCH would.
            orgs.update(org, {"allowed_modes": list(DEMO_ALLOWED_MODES)}, actor="ops:demo")
        _, plaintext = orgs.create_key(org, actor="ops:demo", name="demo")
    return plaintext


def follow(client: httpx.Client, job_id: str) -> dict:
    """Poll the job and its events with a progress bar until the job ends."""
    after: str | None = None
    job: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("validating", total=None)
        while job.get("status") not in TERMINAL:
            time.sleep(1.0)
            job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            params: dict[str, str | int] = {"order": "asc", "limit": 100, **({"after": after} if after else {})}
            for event in client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()["data"]:
                after = event["id"]
                data = event.get("data") or {}
                if event["type"] == "metrics":
                    progress.update(bar, total=data["total_steps"], completed=data["step"])
                else:
                    progress.console.print(f"  [dim]{event['message']}[/dim]")
            stage = (job.get("safety") or {}).get("stage") or job.get("status")
            progress.update(bar, description=str(stage))
    return job


def report_rows(report: dict, job: dict) -> dict[str, str]:
    """One job's safety report as ``{row label: cell}``."""
    scan, training = report.get("scan") or {}, report.get("training") or {}
    evaluation, gate = report.get("evaluation") or {}, report.get("gate") or {}
    rows: dict[str, str] = {}
    if scan:
        flagged = ", ".join(str(e["line"]) for e in scan.get("top_flagged", []))
        rows["scan"] = (
            f"{scan['n']} examples, {scan['n_flagged']} flagged (lines {flagged or 'none'}); "
            f"mean risk {scan['mean_risk']:.2f}"
        )
    if training:
        rows["training"] = (
            f"{training['steps']} steps, mode {training['mode']}, {training['regularized_share']:.0%} "
            f"of steps regularized, final KL {training['final_kl'] or 0:.4f}"
        )
    if evaluation:
        base, tuned = evaluation["base"], evaluation["tuned"]
        rows["ASR (refusal detection)"] = f"base {base['asr_keyword']:.0%} → fine-tuned {tuned['asr_keyword']:.0%}"
        for row in evaluation.get("conditions", [])[1:]:  # the attack conditions after plain
            rows[f"  ASR {row['description']}"] = (
                f"base {row['base']['asr_keyword']:.0%} → fine-tuned {row['tuned']['asr_keyword']:.0%}"
            )
        rows["over-refusal (benign)"] = f"base {base['over_refusal']:.0%} → fine-tuned {tuned['over_refusal']:.0%}"
    if gate:
        rows["gate"] = ("RELEASED: " if gate["released"] else "BLOCKED: ") + " ".join(gate["reasons"])
    rows["status"] = f"{job['status']}  {job.get('fine_tuned_model') or (job.get('error') or {}).get('code', '')}"
    return rows


def print_reports(reports: dict[SafetyMode, tuple[dict, dict]]) -> None:
    """The safety reports of the demo's jobs side by side, one column per training mode."""
    columns = {mode: report_rows(report, job) for mode, (report, job) in reports.items()}
    table = Table(title="Safety reports: the same file, two training modes", show_lines=True)
    table.add_column("")
    for mode in columns:
        table.add_column(f"mode {mode}", overflow="fold")
    labels = list(dict.fromkeys(label for rows in columns.values() for label in rows))
    for label in labels:
        table.add_row(label, *(rows.get(label, "") for rows in columns.values()))
    console.print(table)
    for mode, (report, job) in reports.items():
        released = bool((report.get("gate") or {}).get("released"))
        console.print(f"mode {mode}: {'RELEASED' if released else 'BLOCKED'} (job {job['id']}, {job['status']})")


def phase_times(walls: dict[str, float], alignment: dict) -> str:
    """One line: wall seconds per phase (``walls``, in order) and their total, then where the
    aligned variant came from and, when it was trained now, the alignment's share: the base
    model's answers and the rest (building the set, training, merging)."""
    line = "Phase times: " + ", ".join(f"{name} {s:.0f} s" for name, s in walls.items())
    line += f"; total {sum(walls.values()):.0f} s"
    if alignment["origin"] != "trained":
        return line + f" (aligned variant {ORIGINS[alignment['origin']]})"
    report = alignment["report"]
    answers = "cached" if report.get("answers_cached") else f"{report['generate_seconds']:.0f} s"
    return (
        line + f" (alignment {report['seconds']:.0f} s of it: base answers {answers}, "
        f"training {report['seconds'] - report['generate_seconds']:.0f} s)"
    )


def outcome(
    walls: dict[str, float], aligned: dict, reports: dict[SafetyMode, tuple[dict, dict]], answer: str | None
) -> dict:
    """The demo's result as data: the aligned variant (origin, onboarding baseline), each job's
    outcome (scan counts, ASR and over-refusal as [base, fine-tuned], the gate's verdict), the
    phase times in seconds and the released model's answer (None when nothing was released)."""
    jobs = {}
    for mode, (report, job) in reports.items():
        scan, evaluation = report.get("scan") or {}, report.get("evaluation") or {}
        base, tuned = evaluation.get("base") or {}, evaluation.get("tuned") or {}
        jobs[mode] = {
            "job_id": job["id"],
            "status": job["status"],
            "released": bool((report.get("gate") or {}).get("released")),
            "n_examples": scan.get("n"),
            "n_flagged": scan.get("n_flagged"),
            "asr": [base.get("asr_keyword"), tuned.get("asr_keyword")],
            "over_refusal": [base.get("over_refusal"), tuned.get("over_refusal")],
        }
    baseline = aligned["onboard"]["baseline"]
    return {
        "aligned_model": aligned["model"],
        "alignment_origin": aligned["origin"],
        "onboard_reused": aligned["onboard_reused"],
        "aligned_baseline": {"asr": baseline["asr_keyword"], "over_refusal": baseline["over_refusal"]},
        "phase_seconds": {name: round(s, 1) for name, s in walls.items()},
        "jobs": jobs,
        "answer": answer,
    }


def submit(client: httpx.Client, file_id: str, model: str, mode: str, epochs: int, lr_multiplier: float) -> dict:
    """Create one demo job; a refusal (e.g. an operator policy on modes) ends the demo clearly."""
    response = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": model,
            "training_file": file_id,
            "suffix": f"demo-{mode}",
            "hyperparameters": {"n_epochs": epochs, "batch_size": 4, "learning_rate_multiplier": lr_multiplier},
            "safety": {"mode": mode, "estimator": "probe"},
        },
    )
    if response.status_code != 200:
        raise SystemExit(f"creating the {mode} job failed ({response.status_code}): {response.text}")
    return response.json()


def run_demo(
    epochs: int = DEMO_EPOCHS,
    keep_serving: bool = True,
    lr_multiplier: float = DEMO_LR_MULTIPLIER,
    report_path: Path | None = None,
) -> int:
    """Returns 0 when both jobs ended (released or blocked), 1 otherwise; writes ``outcome``
    to ``report_path`` when given."""
    settings = get_settings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        walls[name], mark = time.monotonic() - mark, time.monotonic()

    server = start_server(settings.home_dir / "serve.log")
    try:
        wait_ready(settings.base_url, server)
        lap("server start")
        console.print(f"[green]guardtune is up[/green] at {settings.base_url} (logs: {settings.home_dir}/serve.log)")
        aligned = align_and_onboard(settings.default_base_model)
        lap("align + onboard")
        examples, onboarded = aligned["report"]["examples"], aligned["onboard"]
        console.print(
            f"Aligned variant {aligned['model']} ({ORIGINS[aligned['origin']]}: "
            f"{examples['refusals']} refusals, {examples['benign']} helpful answers, "
            f"{examples['deep_refusals']} refusals after a harmful start)"
        )
        probe = onboarded["probe"]
        console.print(
            f"Probe: held-out AUROC {probe['auroc']:.3f} on layer(s) {probe['layers']}; aligned model ASR "
            f"{onboarded['baseline']['asr_keyword']:.0%}, over-refusal "
            f"{onboarded['baseline']['over_refusal']:.0%}"
            + (" (onboarded by an earlier run)" if aligned["onboard_reused"] else "")
        )
        key = demo_key()
        with httpx.Client(base_url=settings.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            with DEMO_DATASET.open("rb") as f:
                file = client.post(
                    "/v1/files",
                    data={"purpose": "fine-tune"},
                    files={"file": ("demo_train.jsonl", f, "application/jsonl")},
                ).json()
            console.print(f"Uploaded {file['filename']} as {file['id']} ({file['status']})")
            jobs = {mode: submit(client, file["id"], aligned["model"], mode, epochs, lr_multiplier) for mode in MODES}
            lap("upload + submit")
            reports = {}
            for mode, job in jobs.items():  # the worker runs both jobs' stages in turn, so they end together
                console.print(f"Job {job['id']}: mode {mode}")
                job = follow(client, job["id"])
                reports[mode] = (client.get(f"/v1/fine_tuning/jobs/{job['id']}/safety_report").json(), job)
            lap(f"both jobs ({' + '.join(MODES)})")
            print_reports(reports)
        console.print(phase_times(walls, aligned), soft_wrap=True)
        answer = ask_released_model(settings.base_url, key, reports[SafetyMode.ADAPTIVE][1], console)
        if report_path is not None:
            report_path.write_text(json.dumps(outcome(walls, aligned, reports, answer), indent=2) + "\n")
        console.print(f"\nDashboard: {settings.base_url}/dashboard  (sign in with the demo key: {key})")
        if keep_serving:
            console.print("The server keeps running; Ctrl-C stops it.")
            server.wait()
        finished = (JobStatus.SUCCEEDED, JobStatus.FAILED)
        return 0 if all(job["status"] in finished for _, job in reports.values()) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)
