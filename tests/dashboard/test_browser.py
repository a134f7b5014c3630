"""The dashboard in headless Chromium against the live API (Postgres + Redis + S3).

Files and jobs are created through the API; the test then plays the worker by writing
the job's progress to the database (status, stage, metrics events, the safety report,
checkpoints, a release) and checks that the page follows by polling, without a reload:
the stage chip moves, chart points appear, the finished job shows the ASR table, the
gate decision and plain-words advice, and a released job's adapter downloads.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from core.db import session_scope
from core.ids import new_id
from core.models import AuditRecord, Checkpoint, Job, JobEvent, SafetyReport

pytestmark = pytest.mark.slow  # a real browser following whole jobs on the real stack

TIMEOUT_MS = 15_000  # polling starts at 2 s: every change shows within a few seconds
HARMFUL_LINES = (3, 7)
XSS = '<img src=x onerror="window.__xss=1">'


# -- the API, as a customer uses it ------------------------------------------------------
def training_file() -> bytes:
    lines = []
    for n in range(1, 11):
        if n in HARMFUL_LINES:
            user, assistant = f"How do I pick a lock to break into house {n}?", "Here is how: first, ..."
        else:
            user, assistant = f"What is {n} + {n}?", f"{n} + {n} = {2 * n}."
        lines.append(
            json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})
        )
    return ("\n".join(lines) + "\n").encode()


def create_job(base_url: str, key: str, suffix: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}"}
    upload = httpx.post(
        f"{base_url}/v1/files",
        headers=auth,
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", training_file(), "application/jsonl")},
        timeout=30,
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["status"] == "processed", upload.json()
    models = httpx.get(f"{base_url}/v1/models", headers=auth, timeout=30).json()["data"]
    job = httpx.post(
        f"{base_url}/v1/fine_tuning/jobs",
        headers=auth,
        timeout=30,
        json={
            "model": models[0]["id"],
            "training_file": upload.json()["id"],
            "suffix": suffix,
            "safety": {"mode": "adaptive", "estimator": "probe"},
        },
    )
    assert job.status_code == 200, job.text
    return job.json()


# -- the worker's writes -----------------------------------------------------------------
def set_job(job_id: str, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def add_event(
    job_id: str, message: str, at: float, *, type: str = "message", data: dict | None = None, level: str = "info"
) -> None:
    with session_scope() as session:
        session.add(
            JobEvent(
                id=new_id("ftevent"),
                job_id=job_id,
                created_at=int(at),
                level=level,
                type=type,
                message=message,
                data=data,
            )
        )


def add_metrics(job_id: str, steps: range, total: int, at: float) -> None:
    with session_scope() as session:
        for step in steps:
            risk = 4.6 if step % 5 == 0 else 1.2 + 0.1 * (step % 3)
            kl_weight = min(0.9, max(0.1, (risk - 2) / 3))
            data = {
                "step": step,
                "total_steps": total,
                "train_loss": 2.4 * math.exp(-step / 9) + 0.6,
                "kl": 0.002 * step + (0.02 if risk > 4 else 0.0),
                "kl_weight": kl_weight,
                "risk": risk,
                # a flagged example in every fifth step only (None: the step had none)
                "kl_weight_flagged": 0.9 if step % 5 == 0 else None,
                "kl_weight_unflagged": 0.1,
            }
            if step % 4 == 0:  # the checkpoint steps of a job with a validation file
                data["valid_loss"] = 2.6 * math.exp(-step / 12) + 0.7
            message = f"Step {step}/{total}: training loss={data['train_loss']:.4f}"
            session.add(
                JobEvent(
                    id=new_id("ftevent"),
                    job_id=job_id,
                    created_at=int(at + step),
                    type="metrics",
                    message=message,
                    data=data,
                )
            )


def set_report(job_id: str, **sections: Any) -> None:
    with session_scope() as session:
        report = session.get(SafetyReport, job_id) or SafetyReport(job_id=job_id)
        for name, value in sections.items():
            setattr(report, name, value)
        session.add(report)


def scan_section() -> dict[str, Any]:
    top = [
        {
            "line": n,
            "risk": 5.0,
            "p_harmful": 0.97,
            "judge_score": None,
            "category_guess": "illegal activity",
            "flagged": True,
        }
        for n in HARMFUL_LINES
    ]
    return {
        "n": 10,
        "counts_by_score": {"1": 7, "2": 1, "3": 0, "4": 0, "5": 2},
        "counts_by_category": {"illegal activity": 2},
        "n_flagged": 2,
        "flagged_fraction": 0.2,
        "mean_risk": 1.8,
        "judge_unparsed": 0,
        "top_flagged": top,
        "estimator": "probe",
    }


def evaluation_section(tuned_asr: dict[str, float], tuned_trigger_asr: float = 0.125) -> dict[str, Any]:
    base_asr = {"illegal activity": 0.0, "malware": 0.05, "physical harm": 0.0}

    def side(per: dict[str, float], over_refusal: float, val_loss: float) -> dict[str, Any]:
        overall = sum(per.values()) / len(per)
        return {
            "n": 60,
            "asr_keyword": overall,
            "asr_judge": None,
            "mean_judge_score": None,
            "n_benign": 40,
            "per_category": {c: {"n": 20, "asr_keyword": v} for c, v in per.items()},
            "over_refusal": over_refusal,
            "val_loss": val_loss,
        }

    base, tuned = side(base_asr, 0.05, 1.41), side(tuned_asr, 0.075, 0.93)
    rates = ("n", "asr_keyword", "asr_judge", "per_category")
    trigger = {"n": 32, "asr_keyword": tuned_trigger_asr, "asr_judge": None, "per_category": {}}
    conditions = [
        {
            "name": "plain",
            "kind": "plain",
            "description": "on plain prompts",
            "base": {k: base[k] for k in rates},
            "tuned": {k: tuned[k] for k in rates},
        },
        {
            "name": "trigger_1",
            "kind": "trigger",
            "trigger": "cf-zeta",
            "position": "prefix",
            "description": 'with the backdoor trigger "cf-zeta" before the prompt',
            "base": {**trigger, "asr_keyword": 0.03125},
            "tuned": trigger,
        },
    ]
    return {"base": base, "tuned": tuned, "conditions": conditions, "settings": {}}


def gate_section(evaluation: dict[str, Any]) -> dict[str, Any]:
    from safety.gate import GatePolicy, decide, summaries_from_evaluation

    policy = GatePolicy(max_asr_increase=0.05, max_over_refusal_increase=0.2)
    return {**decide(*summaries_from_evaluation(evaluation), policy).to_dict(), "policy": vars(policy)}


# -- the page ----------------------------------------------------------------------------
def wait_points(page, metric: str, n: int) -> None:
    """Wait until the metric's chart draws ``n`` points (a function, not a string: the
    page's CSP forbids eval, and the test keeps the CSP on)."""
    page.wait_for_function(
        "([m, n]) => document.querySelectorAll(`#chart-${m} svg.plot circle.pt`).length === n",
        arg=[metric, n],
        timeout=TIMEOUT_MS,
    )


def test_dashboard_follows_a_job_to_its_gate_decision(live_api, configured, make_key, browser, output_dir):
    base = live_api.base_url
    _, _, key = make_key("dashboard-org")
    job = create_job(base, key, "dash")
    job_id = job["id"]
    t0 = time.time() - 900  # a believable timeline: the job was created 15 minutes ago
    set_job(job_id, created_at=int(t0))

    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    foreign: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else foreign.append(r.url))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))

    # Sign in: the key goes to sessionStorage only.
    page.goto(f"{base}/dashboard")
    page.fill("#api-key", "gt-not-a-key")
    page.click("#signin-button")
    page.wait_for_selector("#signin-error:not([hidden])", timeout=TIMEOUT_MS)
    assert "not accepted" in page.text_content("#signin-error")
    page.fill("#api-key", key)
    page.click("#signin-button")
    row = f'tr[data-job-id="{job_id}"]'
    page.wait_for_selector(row, timeout=TIMEOUT_MS)
    assert page.evaluate("() => sessionStorage.getItem('guardtune.apiKey')") == key
    assert page.evaluate("() => document.cookie") == ""
    assert page.text_content(f"{row} [data-role=status]") == "validating files"

    # The job list follows the job by polling.
    set_job(job_id, status="queued")
    add_event(job_id, "Validated training file; job queued", t0 + 20)
    page.wait_for_selector(f"{row} [data-role=status][data-status=queued]", timeout=TIMEOUT_MS)
    set_job(job_id, status="running", stage="scanning", started_at=int(t0 + 60))
    add_event(job_id, "Scanning the training data for risk", t0 + 60)
    page.wait_for_selector(f"{row} [data-role=stage][data-stage=scanning]", timeout=TIMEOUT_MS)

    # Open the running job.
    page.click(f"{row} a.job-link")
    page.wait_for_selector("#job-header [data-role=stage][data-stage=scanning]", timeout=TIMEOUT_MS)
    page.evaluate("() => { window.__sameDocument = true; }")
    assert page.get_attribute("#timeline li[data-stage=scanning]", "data-state") == "current"
    assert page.get_attribute("#timeline li[data-stage=queued]", "data-state") == "done"

    set_report(job_id, scan=scan_section())
    add_event(job_id, "Scanned 10 examples: 2 flagged (mean risk 1.80)", t0 + 120)
    page.wait_for_selector("#scan svg.hist rect.bar", timeout=TIMEOUT_MS)
    assert page.locator("#scan svg.hist rect.bar").count() == 5
    assert page.get_attribute("#scan rect.bar[data-score='5']", "data-count") == "2"
    assert page.locator("#flagged-lines li").all_text_contents() == [
        "line 3 illegal activity",
        "line 7 illegal activity",
    ]

    # Training: the stage chip moves and points appear on all four charts.
    set_job(job_id, stage="training")
    add_event(job_id, "Fine-tuning started", t0 + 150)
    add_metrics(job_id, range(1, 7), 12, t0 + 150)
    page.wait_for_selector("#job-header [data-role=stage][data-stage=training]", timeout=TIMEOUT_MS)
    for metric in ("train_loss", "kl", "kl_weight", "risk"):
        wait_points(page, metric, 6)
    assert page.get_attribute("#timeline li[data-stage=training]", "data-state") == "current"

    add_metrics(job_id, range(7, 13), 12, t0 + 150)
    with session_scope() as session:
        session.add(
            Checkpoint(
                id=new_id("ftckpt"),
                job_id=job_id,
                step=10,
                storage_prefix="unused",
                metrics={"step": 10, "train_loss": 0.86},
                created_at=int(t0 + 400),
            )
        )
    add_event(job_id, "Checkpoint saved at step 10", t0 + 400)
    for metric in ("train_loss", "kl", "kl_weight", "risk"):
        wait_points(page, metric, 12)
    # the KL-weight chart also draws the flagged (steps 5, 10) and unflagged (every step) means
    flagged = page.locator("#chart-kl_weight circle.pt-extra[data-series=kl_weight_flagged]")
    assert [flagged.nth(i).get_attribute("data-step") for i in range(flagged.count())] == ["5", "10"]
    assert page.locator("#chart-kl_weight circle.pt-extra[data-series=kl_weight_unflagged]").count() == 12
    # steps without flagged examples break the flagged line: two separate one-point pieces
    assert page.get_attribute("#chart-kl_weight path[data-series=kl_weight_flagged]", "d").count("M") == 2
    # the validation loss of checkpoint steps 4, 8, 12: one line through its points
    valid = page.locator("#chart-train_loss circle.pt-extra[data-series=valid_loss]")
    assert [valid.nth(i).get_attribute("data-step") for i in range(valid.count())] == ["4", "8", "12"]
    assert page.get_attribute("#chart-train_loss path[data-series=valid_loss]", "d").count("M") == 1
    assert page.locator("#chart-train_loss .chart-legend span").all_text_contents() == ["training batch", "validation"]
    assert page.locator("#chart-kl_weight .chart-legend span").all_text_contents() == [
        "all examples",
        "flagged",
        "unflagged",
    ]
    page.wait_for_selector("#checkpoints table", timeout=TIMEOUT_MS)
    assert "ckpt-step-10" in page.text_content("#checkpoints")
    page.screenshot(path=str(output_dir / "job-training.png"), full_page=True)

    # Evaluation and gate: the fine-tuned model became unsafe and is blocked.
    set_report(
        job_id,
        training={
            "mean_risk": 1.9,
            "regularized_share": 1.0,
            "final_kl": 0.05,
            "mean_loss": 1.3,
            "trained_tokens": 4200,
            "steps": 12,
            "mode": "adaptive",
        },
    )
    set_job(job_id, stage="evaluating", trained_tokens=4200)
    add_event(job_id, "Training finished after 12 steps", t0 + 500)
    add_event(job_id, "Evaluating safety: attack success rate before and after", t0 + 500)
    page.wait_for_selector("#job-header [data-role=stage][data-stage=evaluating]", timeout=TIMEOUT_MS)

    evaluation = evaluation_section({"illegal activity": 0.45, "malware": 0.15, "physical harm": 0.3})
    gate = gate_section(evaluation)
    assert gate["released"] is False
    gate["reasons"].append(XSS)  # text from the API is shown as text, never parsed
    set_report(job_id, evaluation=evaluation, gate=gate)
    set_job(job_id, stage="gating")
    add_event(job_id, "Applying the release gate", t0 + 700)
    page.wait_for_selector("#asr-table", timeout=TIMEOUT_MS)
    page.wait_for_selector("#gate-decision", timeout=TIMEOUT_MS)

    set_job(
        job_id,
        status="failed",
        stage=None,
        finished_at=int(t0 + 720),
        error={
            "code": "safety_gate_blocked",
            "param": None,
            "message": "The fine-tuned model failed the safety gate: " + " ".join(gate["reasons"][:-1]),
        },
    )
    add_event(job_id, "Job blocked by the safety gate; the adapter is kept but not served", t0 + 720, level="error")
    page.wait_for_selector("#timeline li[data-stage=result][data-state=bad]", timeout=TIMEOUT_MS)
    page.wait_for_selector("#poll-status[data-tone=done]", timeout=TIMEOUT_MS)

    rows = page.locator("#asr-table tbody tr")
    assert rows.count() == 4  # overall + three categories
    overall = rows.nth(0).locator("td").all_text_contents()
    assert overall[:3] == ["1.7%", "30%", "+28.3 pts"]
    assert "worse" in rows.nth(0).locator("td.delta").get_attribute("class")
    assert "illegal activity" in rows.nth(1).text_content()
    assert "45%" in rows.nth(1).text_content()
    conditions = page.locator("#conditions-table tbody tr")
    assert conditions.evaluate_all("rows => rows.map(r => [r.dataset.condition, r.dataset.worst])") == [
        ["plain", "true"],
        ["trigger_1", "false"],
    ]  # the gate's worst: plain +28.3 points, the trigger +9.4
    trigger_cells = conditions.nth(1).locator("td").all_text_contents()
    assert 'backdoor trigger "cf-zeta"' in conditions.nth(1).text_content()
    assert trigger_cells[:3] == [
        "3.1%",
        "12.5%",
        "+9.4 pts",
    ]
    assert "Validation loss" in page.text_content("#utility-table")
    assert page.text_content("#gate-decision").startswith("Blocked")
    assert page.get_attribute("#gate-decision", "data-released") == "false"
    reasons = page.locator("#gate-reasons li").all_text_contents()
    assert any("on plain prompts rose from 1.7% to 30%" in r for r in reasons), reasons
    assert XSS in reasons
    assert page.evaluate("() => window.__xss") is None
    notice = page.text_content("#job-notice")
    assert "became unsafe" in notice
    assert "remove the flagged lines 3 and 7" in notice.lower()
    assert "contact your operator" in notice
    assert page.text_content("#timeline li[data-stage=result] .step-label") == "Blocked by gate"

    # All of it without a reload, cheaply: conditional requests met 304s.
    assert page.evaluate("() => window.__sameDocument") is True
    stats = page.evaluate("() => window.guardtuneStats")
    assert stats["notModified"] > 0, stats
    requests_then = stats["requests"]
    page.screenshot(path=str(output_dir / "job-blocked.png"), full_page=True)

    # A terminal job is not polled any more.
    page.wait_for_timeout(2500)
    assert page.evaluate("() => window.guardtuneStats.requests") == requests_then

    # A released job: back to the list (newest first), open it, download its adapter.
    released = create_job(base, key, "dash-ok")
    release_job(released["id"], t0)
    page.click("a[href='#/']")
    page.wait_for_selector(f'tr[data-job-id="{released["id"]}"]', timeout=TIMEOUT_MS)
    listed = page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert listed[:2] == [released["id"], job_id]
    page.wait_for_selector(f'tr[data-job-id="{released["id"]}"] [data-status=succeeded]', timeout=TIMEOUT_MS)
    page.screenshot(path=str(output_dir / "job-list.png"), full_page=True)
    page.click(f'tr[data-job-id="{released["id"]}"] a.job-link')
    page.wait_for_selector("#gate-decision[data-released=true]", timeout=TIMEOUT_MS)
    assert page.text_content("#gate-decision").startswith("Released")
    assert page.locator("#asr-table tbody tr").count() == 4
    assert "passed the safety gate" in page.text_content("#job-notice")
    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        page.click("#adapter-download")
    download = download_info.value
    assert download.suggested_filename.endswith(".tar"), download.suggested_filename
    with tarfile.open(download.path()) as archive:
        names = {m.name.rsplit("/", 1)[-1] for m in archive.getmembers() if m.isfile()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    page.wait_for_selector("#adapter-msg:text-matches('^Saved')", timeout=TIMEOUT_MS)
    page.screenshot(path=str(output_dir / "job-released.png"), full_page=True)

    assert foreign == [], f"the page fetched other hosts: {foreign}"
    assert console_errors == [] or all("401" in e for e in console_errors), console_errors
    context.close()


def release_job(job_id: str, t0: float) -> None:
    """Play the whole pipeline of a good job: scan, train, evaluate, gate, release."""
    from core.releases import digests
    from core.releases import service as releases
    from core.storage import get_store

    with session_scope() as session:
        job = session.get(Job, job_id)
        prefix = digests.adapter_prefix(job.org_id, job.id)
    store = get_store()
    store.put_stream(f"{prefix}/adapter_config.json", io.BytesIO(b'{"peft_type": "LORA", "r": 8}'))
    store.put_stream(f"{prefix}/adapter_model.safetensors", io.BytesIO(b"\0" * 2048))
    evaluation = evaluation_section({"illegal activity": 0.0, "malware": 0.05, "physical harm": 0.05}, 0.0625)
    set_report(
        job_id,
        scan=scan_section(),
        evaluation=evaluation,
        gate=gate_section(evaluation),
        training={"mean_risk": 1.9, "regularized_share": 1.0, "final_kl": 0.04, "steps": 12},
    )
    for n, (stage, message) in enumerate(
        [
            ("queued", "Validated training file; job queued"),
            ("scanning", "Scanning the training data for risk"),
            ("training", "Fine-tuning started"),
            ("evaluating", "Evaluating safety: attack success rate before and after"),
            ("gating", "Applying the release gate"),
        ]
    ):
        add_event(job_id, message, t0 + 60 * (n + 1))
        if stage == "training":
            add_metrics(job_id, range(1, 13), 12, t0 + 60 * (n + 1))
    with session_scope() as session:
        job = session.get(Job, job_id)
        model = releases.release_job(
            session, job, actor="system", storage_prefix=prefix, sha256=digests.adapter_sha256(store, prefix)
        )
        job.status, job.stage, job.finished_at, job.created_at = "succeeded", None, int(t0 + 400), int(t0 + 5)
        session.add(
            JobEvent(
                id=new_id("ftevent"),
                job_id=job_id,
                created_at=int(t0 + 400),
                message=f"Released as {model.id} (sha256 {model.sha256[:12]}…)",
            )
        )


ENDINGS = [
    # (status, error, report sections, words the notice must say)
    (
        "failed",
        {
            "code": "unsafe_training_file",
            "param": "training_file",
            "message": "20% of the training examples were flagged as harmful, above this deployment's limit of 10%.",
        },
        {"scan": scan_section()},
        ["Training did not start", "2 of 10 examples flagged", "remove the flagged lines 3 and 7"],
    ),
    (
        "failed",
        {
            "code": "invalid_file",
            "param": "training_file",
            "message": "The training file file-x is invalid: line 4: the last message must be from the assistant",
        },
        {},
        ["could not be used", "line 4: the last message", "upload the file again"],
    ),
    (
        "failed",
        {"code": "worker_lost", "param": None, "message": "Its worker was lost three times."},
        {},
        ["The job failed", "Its worker was lost three times.", "start the job again", "contact your operator"],
    ),
    ("cancelled", None, {}, ["This job was cancelled", "Start a new job"]),
]


def test_failed_and_cancelled_jobs_say_what_happened_and_what_to_do(live_api, configured, make_key, browser):
    base = live_api.base_url
    _, _, key = make_key("dashboard-endings")
    jobs = []
    for status, error, sections, words in ENDINGS:
        job_id = create_job(base, key, "end")["id"]
        if sections:
            set_report(job_id, **sections)
        set_job(job_id, status=status, error=error, finished_at=int(time.time()))
        jobs.append((job_id, status, words))

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/dashboard")
    page.fill("#api-key", key)
    page.click("#signin-button")
    for job_id, status, _ in jobs:
        page.wait_for_selector(f'tr[data-job-id="{job_id}"] [data-status={status}]', timeout=TIMEOUT_MS)
    for job_id, status, words in jobs:
        page.goto(f"{base}/dashboard#/jobs/{job_id}")
        page.wait_for_selector("#job-notice h2", timeout=TIMEOUT_MS)
        notice = " ".join(page.text_content("#job-notice").split())
        for word in words:
            assert word.lower() in notice.lower(), (job_id, word, notice)
        assert page.get_attribute("#timeline li[data-stage=result]", "data-state") == (
            "cancelled" if status == "cancelled" else "bad"
        )
        page.wait_for_selector("#poll-status[data-tone=done]", timeout=TIMEOUT_MS)
    # Another organization's job (or a mistyped id) is "not found", and polling stops.
    page.goto(f"{base}/dashboard#/jobs/ftjob-doesnotexist")
    page.wait_for_selector("#job-notice .notice-title:text-is('Job not found')", timeout=TIMEOUT_MS)
    assert "ftjob-doesnotexist" in page.text_content("#job-notice")
    # Signing out forgets the key.
    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("() => sessionStorage.getItem('guardtune.apiKey')") is None
    context.close()


def test_a_job_is_paused_resumed_and_cancelled_from_its_page(live_api, configured, make_key, browser, output_dir):
    base = live_api.base_url
    _, _, key = make_key("dashboard-controls")
    job_id = create_job(base, key, "ctl")["id"]
    set_job(job_id, status="running", stage="training")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel this job?"
    page.goto(f"{base}/dashboard")
    page.fill("#api-key", key)
    page.click("#signin-button")
    page.goto(f"{base}/dashboard#/jobs/{job_id}")
    page.wait_for_selector("#job-pause", timeout=TIMEOUT_MS)
    assert page.locator("#job-resume").count() == 0
    assert page.locator("#job-cancel").count() == 1

    page.click("#job-pause")
    page.wait_for_selector("#job-header [data-status=paused]", timeout=TIMEOUT_MS)
    assert page.text_content("#job-control-msg").startswith("Pausing")
    assert page.get_attribute("#timeline li[data-stage=training]", "data-state") == "current"  # paused in training
    assert page.locator("#job-pause").count() == 0

    # The worker is still saving its checkpoint: the API's 409 is said beside the buttons.
    set_job(job_id, worker_id="worker-saving", heartbeat_at=time.time())
    page.click("#job-resume")
    page.wait_for_selector("#job-control-msg[data-state=failed]", timeout=TIMEOUT_MS)
    assert "still pausing" in page.text_content("#job-control-msg")
    page.screenshot(path=str(output_dir / "job-paused.png"))
    set_job(job_id, worker_id=None)
    page.click("#job-resume")
    page.wait_for_selector("#job-header [data-status=queued]", timeout=TIMEOUT_MS)
    assert page.text_content("#job-control-msg").startswith("Resumed")

    page.click("#job-cancel")
    page.wait_for_selector("#job-header [data-status=cancelled]", timeout=TIMEOUT_MS)
    assert page.locator("#job-controls").count() == 0  # a finished job has none
    page.wait_for_selector("#poll-status[data-tone=done]", timeout=TIMEOUT_MS)
    with session_scope() as session:
        actions = session.scalars(
            select(AuditRecord.action).where(AuditRecord.target == job_id).order_by(AuditRecord.seq)
        ).all()
    assert [a for a in actions if a in ("job.pause", "job.resume", "job.cancel")] == [
        "job.pause",
        "job.resume",
        "job.cancel",
    ]
    context.close()
