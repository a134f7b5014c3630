"""The dashboard's "New job" view in headless Chromium against the live API (Postgres + Redis + S3).

An invalid upload shows the API's errors by line and leaves no file behind; a valid one is
listed as the training file, the form's estimate shows the numbers the API's ``dry_run``
answers for the same body, and "Create job" makes the job the form describes, as the
``openai`` SDK reads it, and opens its page.
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from core.datasets import validate_chunks
from core.db import session_scope
from core.jobs.pipeline import Stage
from core.models import StageRun

pytestmark = pytest.mark.slow  # a real browser on the real stack

TIMEOUT_MS = 15_000


def chat(user: str, assistant: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})


GOOD = ("\n".join(chat(f"What is {n} + {n}?", f"{n} + {n} = {2 * n}.") for n in range(1, 9)) + "\n").encode()
BAD = "\n".join(
    [
        chat("What is 1 + 1?", "2."),
        '{"messages": [{"role": "user", "content": "unterminated"}',
        json.dumps({"messages": [{"role": "user", "content": "Who answers?"}]}),
        chat("What is 2 + 2?", "4."),
    ]
).encode()


def sdk(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def sign_in_to_new_job(browser, base_url: str, key: str):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base_url}/dashboard")
    page.fill("#api-key", key)
    page.click("#signin-button")
    page.click("#new-job-link", timeout=TIMEOUT_MS)
    page.wait_for_selector("#job-model option", state="attached", timeout=TIMEOUT_MS)
    return context, page, errors


def upload(page, name: str, content: bytes) -> None:
    page.set_input_files("#upload-file", {"name": name, "mimeType": "application/jsonl", "buffer": content})
    page.click("#upload-button")


def test_an_invalid_upload_shows_its_errors_by_line_and_keeps_no_file(live_api, configured, make_key, browser):
    _, _, key = make_key("dashboard-new-invalid")
    client = sdk(live_api.base_url, key)
    context, page, errors = sign_in_to_new_job(browser, live_api.base_url, key)

    upload(page, "bad.jsonl", BAD)
    page.wait_for_selector("#upload-errors", timeout=TIMEOUT_MS)
    expected = validate_chunks([BAD]).errors  # the API's validator, as it words each line's problem
    assert [issue.line for issue in expected] == [2, 3]
    items = page.locator("#upload-error-lines li")
    assert items.evaluate_all("lis => lis.map(li => li.dataset.line)") == [str(i.line) for i in expected]
    assert items.all_text_contents() == [f"line {i.line}: {i.message}" for i in expected]
    assert "bad.jsonl" in page.text_content("#upload-errors")
    assert "Validation failed: 2 errors" in page.text_content("#upload-errors")
    assert "Nothing was kept" in page.text_content("#upload-errors")
    assert client.files.list().data == []  # the invalid file was not kept
    assert page.locator("#job-training-file option").count() == 0

    upload(page, "good.jsonl", GOOD)  # a fixed file clears the errors and becomes the training file
    page.wait_for_selector("#upload-msg[data-state=ok]", timeout=TIMEOUT_MS)
    assert page.locator("#upload-errors").count() == 0
    [stored] = client.files.list().data
    assert (stored.filename, stored.status) == ("good.jsonl", "processed")
    page.wait_for_function(
        "id => document.querySelector('#job-training-file').value === id", arg=stored.id, timeout=TIMEOUT_MS
    )
    assert errors == []
    context.close()


def measure_every_stage(job_id: str) -> None:
    """Finished runs of every stage on this deployment: the estimate then has a wall time."""
    with session_scope() as session:
        for stage in Stage:
            tokens = 40_000 if stage == Stage.TRAIN else None
            session.add(StageRun(job_id=job_id, stage=stage, seconds=30.0, tokens=tokens, finished_at=time.time()))


def test_a_job_is_estimated_then_created_from_the_form(live_api, configured, make_key, browser, output_dir):
    _, _, key = make_key("dashboard-new-job")
    client = sdk(live_api.base_url, key)
    context, page, errors = sign_in_to_new_job(browser, live_api.base_url, key)
    assert page.is_disabled("#job-create")

    upload(page, "train.jsonl", GOOD)
    page.wait_for_selector("#upload-msg[data-state=ok]", timeout=TIMEOUT_MS)
    [training] = client.files.list().data
    page.wait_for_function(
        "id => document.querySelector('#job-training-file').value === id", arg=training.id, timeout=TIMEOUT_MS
    )
    model = client.models.list().data[0].id
    measured = client.fine_tuning.jobs.create(model=model, training_file=training.id)
    measure_every_stage(measured.id)

    # The API's 400 shows in the form, naming the parameter; nothing can be created.
    page.fill("#hp-n_epochs", "0")
    page.click("#job-estimate")
    page.wait_for_selector("#job-form-error:not([hidden])", timeout=TIMEOUT_MS)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(  # the body the form sends
            model=model,
            training_file=training.id,
            method={
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {"n_epochs": 0, "batch_size": "auto", "learning_rate_multiplier": "auto"}
                },
            },
            extra_body={"safety": {"mode": "adaptive", "estimator": "probe"}},
            extra_query={"dry_run": "true"},
        )
    assert isinstance(refused.value.body, dict)
    assert page.text_content("#job-form-error").startswith(refused.value.body["message"])
    assert "n_epochs" in page.get_attribute("#job-form-error", "data-param")
    assert page.is_disabled("#job-create")

    # A valid form: its estimate is the API's dry run of the same body.
    page.select_option("#job-model", model)
    page.fill("#hp-n_epochs", "2")
    page.fill("#hp-batch_size", "3")
    page.fill("#job-suffix", "dash-new")
    page.fill("#job-seed", "7")
    page.select_option("#safety-mode", "constant")
    assert page.is_hidden("#safety-kl-min") and page.is_visible("#safety-constant-kl")
    page.fill("#safety-constant-kl", "0.3")
    page.fill("#safety-max-flagged", "0.25")
    page.click("#job-estimate")
    page.wait_for_selector("#estimate:not([hidden]) [data-field=steps]", timeout=TIMEOUT_MS)
    assert page.is_hidden("#job-form-error")

    dry_run = client.fine_tuning.jobs.with_raw_response.create(  # the body the form sends
        model=model,
        training_file=training.id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": "auto"}},
        },
        suffix="dash-new",
        seed=7,
        extra_body={
            "safety": {
                "mode": "constant",
                "estimator": "probe",
                "constant_kl_weight": 0.3,
                "max_flagged_fraction": 0.25,
            }
        },
        extra_query={"dry_run": "true"},
    ).http_response.json()
    assert dry_run["object"] == "fine_tuning.job.estimate"
    assert dry_run["steps"] == 2 * 3 and dry_run["examples"] == 8  # ceil(8 / 3) batches × 2 epochs
    assert dry_run["estimated_seconds"] is not None
    for name in ("examples", "tokens", "steps", "estimated_seconds", "tokens_per_second"):
        shown = page.get_attribute(f"#estimate-numbers [data-field={name}]", "data-value")
        assert json.loads(shown) == pytest.approx(dry_run[name]), name
    for name, value in dry_run["hyperparameters"].items():
        if value is not None:
            shown = page.get_attribute(f'#estimate-numbers [data-field="hyperparameters.{name}"]', "data-value")
            assert json.loads(shown) == pytest.approx(value), name
    stages = page.locator("#estimate-stages tbody tr")
    assert stages.evaluate_all("rows => rows.map(r => r.dataset.stage)") == list(dry_run["stages"])
    shown_stages = stages.evaluate_all("rows => rows.map(r => JSON.parse(r.cells[1].dataset.value))")
    assert shown_stages == pytest.approx(list(dry_run["stages"].values()))
    assert page.text_content("#estimate-numbers [data-field=steps]") == "6"
    assert page.is_enabled("#job-create")
    page.screenshot(path=str(output_dir / "new-job-estimate.png"), full_page=True)

    # A change asks for a new estimate; changing it back makes the estimate current again.
    page.fill("#hp-n_epochs", "3")
    page.wait_for_selector("#estimate[data-stale=true]", timeout=TIMEOUT_MS)
    assert page.is_disabled("#job-create")
    page.fill("#hp-n_epochs", "2")
    page.wait_for_selector("#estimate[data-stale=false]", timeout=TIMEOUT_MS)
    assert page.is_enabled("#job-create")

    before = {job.id for job in client.fine_tuning.jobs.list().data}
    page.click("#job-create")
    page.wait_for_function("() => location.hash.startsWith('#/jobs/ftjob')", timeout=TIMEOUT_MS)
    job_id = page.evaluate("() => decodeURIComponent(location.hash.slice('#/jobs/'.length))")
    assert job_id not in before
    job = client.fine_tuning.jobs.retrieve(job_id)
    extra = job.model_extra or {}
    assert (job.model, job.training_file, job.seed, extra["user_provided_suffix"]) == (
        model,
        training.id,
        7,
        "dash-new",
    )
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 3)
    safety = extra["safety"]
    assert (safety["mode"], safety["constant_kl_weight"], safety["max_flagged_fraction"]) == ("constant", 0.3, 0.25)
    assert [j.id for j in client.fine_tuning.jobs.list().data if j.id not in before] == [job_id]  # one job made
    page.wait_for_selector("#job-header [data-role=status]", timeout=TIMEOUT_MS)
    assert job_id in page.text_content("#job-header")
    assert errors == []
    context.close()
