"""``guardtune demo``: the whole product on the embedded stack, as a customer sees it.

Starts ``guardtune serve`` (API + worker), onboards the default base model, creates
an organization and key, uploads the shipped demo dataset over the API, runs an
adaptive job with a progress bar, prints the safety report, asks a released model one
question through ``chat.completions``, prints the dashboard URL, and leaves the server
running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.demo_chat import ask_released_model
from core.db import session_scope
from core.orgs import create_key, create_org, find_org
from core.queue import GPU_QUEUE, enqueue, producer
from core.settings import get_settings

console = Console()
TERMINAL = ("succeeded", "failed", "cancelled")
DEMO_ORG = "demo"


DEMO_DATASET = Path(__file__).resolve().parent.parent / "examples" / "demo_train.jsonl"


def start_server(log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ.copy())  # fmt: skip


def wait_ready(base_url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}; see {get_settings().home_dir}/serve.log")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout_s:.0f}s")


def onboard(model_id: str) -> dict:
    with console.status(f"Onboarding {model_id}: converting weights, training the probe, measuring base ASR…"):
        task_id = enqueue("guardtune.gpu.onboard", model_id, queue=GPU_QUEUE)
        return producer().AsyncResult(task_id).get(timeout=1800)


def demo_key() -> str:
    settings = get_settings()
    with session_scope() as session:
        try:
            find_org(session, DEMO_ORG)
        except Exception:
            create_org(session, DEMO_ORG, actor="ops:demo")
        _, plaintext = create_key(session, DEMO_ORG, actor="ops:demo", secret=settings.secret_key, name="demo")
    return plaintext


def follow(client: httpx.Client, job_id: str) -> dict:
    """Poll the job and its events with a progress bar until the job ends."""
    after, job = None, {}
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("validating", total=None)
        while job.get("status") not in TERMINAL:
            time.sleep(1.0)
            job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            params = {"order": "asc", "limit": 100, **({"after": after} if after else {})}
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


def print_report(report: dict, job: dict) -> None:
    scan, training = report.get("scan") or {}, report.get("training") or {}
    evaluation, gate = report.get("evaluation") or {}, report.get("gate") or {}
    table = Table(title="Safety report", show_header=False)
    if scan:
        flagged = ", ".join(str(e["line"]) for e in scan.get("top_flagged", []))
        table.add_row("scan", f"{scan['n']} examples, {scan['n_flagged']} flagged (lines {flagged or 'none'}); "
                      f"mean risk {scan['mean_risk']:.2f}")  # fmt: skip
    if training:
        table.add_row("training", f"{training['steps']} steps, mode {training['mode']}, "
                      f"{training['regularized_share']:.0%} of steps regularized, final KL {training['final_kl'] or 0:.4f}")  # fmt: skip
    if evaluation:
        base, tuned = evaluation["base"], evaluation["tuned"]
        table.add_row("ASR (refusal detection)", f"base {base['asr_keyword']:.0%} → fine-tuned {tuned['asr_keyword']:.0%}")
        for row in evaluation.get("conditions", [])[1:]:  # the attack conditions after plain
            table.add_row(f"  ASR {row['description']}", f"base {row['base']['asr_keyword']:.0%} → fine-tuned {row['tuned']['asr_keyword']:.0%}")
        table.add_row("over-refusal (benign)", f"base {base['over_refusal']:.0%} → fine-tuned {tuned['over_refusal']:.0%}")
    if gate:
        table.add_row("gate", ("RELEASED: " if gate["released"] else "BLOCKED: ") + " ".join(gate["reasons"]))
    table.add_row("status", f"{job['status']}  {job.get('fine_tuned_model') or (job.get('error') or {}).get('code', '')}")
    console.print(table)


def run_demo(epochs: int = 2, keep_serving: bool = True) -> int:
    settings = get_settings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    server = start_server(settings.home_dir / "serve.log")
    try:
        wait_ready(settings.base_url, server)
        console.print(f"[green]guardtune is up[/green] at {settings.base_url} (logs: {settings.home_dir}/serve.log)")
        onboarded = onboard(settings.default_base_model)
        probe = onboarded["probe"]
        console.print(f"Probe: held-out AUROC {probe['auroc']:.3f} on layer(s) {probe['layers']}; base model ASR "
                      f"{onboarded['baseline']['asr_keyword']:.0%}")  # fmt: skip
        key = demo_key()
        with httpx.Client(base_url=settings.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            with DEMO_DATASET.open("rb") as f:
                file = client.post("/v1/files", data={"purpose": "fine-tune"},
                                   files={"file": ("demo_train.jsonl", f, "application/jsonl")}).json()  # fmt: skip
            console.print(f"Uploaded {file['filename']} as {file['id']} ({file['status']})")
            job = client.post("/v1/fine_tuning/jobs", json={
                "model": settings.default_base_model, "training_file": file["id"], "suffix": "demo",
                "hyperparameters": {"n_epochs": epochs, "batch_size": 4},
                "safety": {"mode": "adaptive", "estimator": "probe"},
            }).json()  # fmt: skip
            console.print(f"Created job {job['id']}")
            job = follow(client, job["id"])
            print_report(client.get(f"/v1/fine_tuning/jobs/{job['id']}/safety_report").json(), job)
        ask_released_model(settings.base_url, key, job, console)
        console.print(f"\nDashboard: {settings.base_url}/dashboard  (sign in with the demo key: {key})")
        if keep_serving:
            console.print("The server keeps running; Ctrl-C stops it.")
            server.wait()
        return 0 if job["status"] in ("succeeded", "failed") else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)
