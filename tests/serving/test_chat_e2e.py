"""``/v1/chat/completions`` through the official ``openai`` SDK on the real stack: the API
under uvicorn, Postgres, Redis, the S3 server, a Celery worker and the embedded
``guardtune infer`` process, on a tiny model released by a real job."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from core.chat import MAX_N
from core.db import session_scope
from core.releases.digests import adapter_prefix, model_id
from core.releases.service import revoke_model
from core.storage import get_store, org_key
from tests.conftest import apply_env, start_api, start_worker, stop_process
from tests.dashboard.conftest import browser, chromium_path  # noqa: F401  (fixtures)
from tests.serving.conftest import start_infer
from tests.worker.conftest import create_job, small_pipeline_env
from tests.worker.jobs import finished, stored_jsonl, upload

pytestmark = pytest.mark.slow  # a real job released and served by real API, worker and infer processes

RATE_LIMIT = 60


@pytest.fixture(scope="module")
def stack(deployment_env, tiny_model, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serving")
    env = {
        **deployment_env,
        **small_pipeline_env(tiny_model),
        "GUARDTUNE_CHAT_REQUESTS_PER_MINUTE": str(RATE_LIMIT),
        "GUARDTUNE_CHAT_MAX_TOKENS": "128",
        "GUARDTUNE_INFER_BATCH_WAIT_MS": "500",  # concurrent requests meet in one batch on a slow machine too
    }
    infer, env = start_infer(env, logs / "infer.log")
    api = start_api(env, logs / "api.log")
    worker = start_worker(env, logs / "worker.log")
    yield env, api, infer
    for process in (worker, api.process, infer.process):
        stop_process(process)


@pytest.fixture(scope="module")
def released(stack, make_key):
    """A job trained, evaluated and released on the tiny model: (client, job)."""
    env, api, _ = stack
    _, _, key = make_key(f"serving-{time.monotonic_ns()}")
    client = OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0, timeout=120)
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(client),
        suffix="chat",
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        seed=3,
    )
    job = finished(client, job.id)
    assert job.status == "succeeded", job.error
    return client, job


def eval_rows(env, job) -> list[dict]:
    return stored_jsonl(env, org_key(job.organization_id, "jobs", job.id, "eval_outputs.jsonl"))


def ask(client: OpenAI, model: str, prompt: str, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=4, **kwargs
    )


def test_released_model_answers_what_its_evaluation_stored(stack, released):
    env, _, infer = stack
    client, job = released
    rows = eval_rows(env, job)
    assert len(rows) == 7
    assert any(r["response"] for r in rows)
    for row in rows:
        answer = ask(client, job.fine_tuned_model, row["prompt"])
        assert answer.choices[0].message.content == row["response"], row
        assert answer.model == job.fine_tuned_model
        assert answer.object == "chat.completion"
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage.prompt_tokens > 5
        assert 0 < answer.usage.completion_tokens <= 4
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    health = httpx.get(f"{infer.base_url}/health").json()
    assert list(health["loaded"].values()) == [[job.fine_tuned_model]]


def test_concurrent_requests_are_batched_and_answer_the_same(stack, released):
    env, _, infer = stack
    client, job = released
    rows = eval_rows(env, job)
    before = httpx.get(f"{infer.base_url}/health").json()["batches"]
    with ThreadPoolExecutor(len(rows)) as pool:
        answers = list(pool.map(lambda r: ask(client, job.fine_tuned_model, r["prompt"]), rows))
    assert [a.choices[0].message.content for a in answers] == [r["response"] for r in rows]
    health = httpx.get(f"{infer.base_url}/health").json()
    assert health["max_batch_seen"] > 1
    assert health["batches"] - before < len(rows)


def test_streaming_yields_the_same_text(stack, released):
    env, _, _ = stack
    client, job = released
    row = next(r for r in eval_rows(env, job) if r["response"])
    chunks = list(ask(client, job.fine_tuned_model, row["prompt"], stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == row["response"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    raw = httpx.post(
        f"{client.base_url}chat/completions",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={
            "model": job.fine_tuned_model,
            "stream": True,
            "temperature": 0,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_base_model_is_served(released):
    client, _ = released
    answer = ask(client, "tiny", "Hello there")
    assert answer.model == "tiny"
    assert answer.usage.completion_tokens > 0


def test_other_org_unknown_and_unreleased_models_are_404(stack, released, make_key):
    _, api, _ = stack
    client, job = released
    _, _, other_key = make_key(f"serving-other-{time.monotonic_ns()}")
    other = OpenAI(base_url=f"{api.base_url}/v1", api_key=other_key, max_retries=0)
    never_released = job.fine_tuned_model.rsplit(":", 1)[0] + ":ftjob-notreleased"
    for who, model in ((other, job.fine_tuned_model), (client, "no-such-model"), (client, never_released)):
        with pytest.raises(openai.NotFoundError) as err:
            ask(who, model, "hi")
        assert err.value.body["code"] == "model_not_found"
        assert err.value.body["param"] == "model"


def test_bad_requests_are_400(released):
    client, job = released
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, job.fine_tuned_model, "hi", n=MAX_N + 1)
    assert err.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "x"}], max_tokens=129
        )
    assert err.value.body["param"] == "max_tokens"


def test_rate_limit_is_429_with_retry_after(stack, make_key):
    _, api, _ = stack
    _, _, key = make_key(f"serving-limited-{time.monotonic_ns()}")
    client = OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
    for _ in range(RATE_LIMIT):
        with pytest.raises(openai.NotFoundError):  # cheap requests count too
            ask(client, "no-such-model", "hi")
    with pytest.raises(openai.RateLimitError) as err:
        ask(client, "tiny", "hi")
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    assert err.value.body["code"] == "rate_limit_exceeded"


def test_dashboard_try_it_box_asks_the_released_model(stack, released, browser):  # noqa: F811
    env, api, _ = stack
    client, job = released
    row = next(r for r in eval_rows(env, job) if r["response"])
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{api.base_url}/dashboard")
    page.fill("#api-key", client.api_key)
    page.click("#signin-button")
    page.goto(f"{api.base_url}/dashboard#/jobs/{job.id}")
    page.wait_for_selector("#try-prompt", timeout=30_000)
    page.fill("#try-prompt", row["prompt"])
    page.click("#try-send")
    page.wait_for_selector("#try-answer[data-state]", timeout=60_000)
    assert page.get_attribute("#try-answer", "data-state") == "answered"
    # Greedy decoding up to the server's max_tokens: the stored 4-token answer is its beginning.
    answer = page.text_content("#try-answer")
    assert answer.startswith(row["response"])
    assert len(answer) >= len(row["response"])
    assert errors == []
    page.context.close()


def test_demo_asks_the_released_model_once(stack, released):
    from rich.console import Console

    from cli.demo_chat import DEMO_QUESTION, ask_released_model

    _, api, _ = stack
    client, job = released
    console = Console(record=True, width=100_000)
    text = ask_released_model(api.base_url, client.api_key, job.model_dump(), console)
    expected = client.chat.completions.create(
        model=job.fine_tuned_model, temperature=0, max_tokens=96, messages=[{"role": "user", "content": DEMO_QUESTION}]
    )
    assert text
    assert text == expected.choices[0].message.content
    assert f"Your model answers: {text}" in console.export_text()
    assert ask_released_model(api.base_url, client.api_key, {**job.model_dump(), "status": "failed"}, console) is None


def test_blocked_model_is_404_until_ops_approve_it(stack, released, monkeypatch):
    """A job the gate blocked (holding the released job's adapter files) is not served;
    ``guardtune-ops release approve`` releases it and it answers from the next request on."""
    from typer.testing import CliRunner

    from cli.ops import app as ops_cli

    env, _, _ = stack
    apply_env(monkeypatch, env)
    client, job = released
    org = job.organization_id
    with session_scope() as session:
        blocked = create_job(
            session,
            org,
            b'{"messages": []}\n',
            status="failed",
            suffix="blocked",
            error={"code": "safety_gate_blocked", "message": "ASR above the gate"},
        )
    store, src = get_store(), adapter_prefix(org, job.id)
    for key in store.list(src + "/"):
        store.put_stream(adapter_prefix(org, blocked) + key[len(src) :], io.BytesIO(b"".join(store.iter_chunks(key))))
    model = model_id("tiny", org, "blocked", blocked)
    row = next(r for r in eval_rows(env, job) if r["response"])
    with pytest.raises(openai.NotFoundError):
        ask(client, model, row["prompt"])
    result = CliRunner().invoke(ops_cli, ["release", "approve", blocked, "--reason", "reviewed by a human"])
    assert result.exit_code == 0, result.output
    assert ask(client, model, row["prompt"]).choices[0].message.content == row["response"]


def test_revoked_model_is_404_on_the_next_request(stack, released):
    env, _, _ = stack
    client, job = released
    assert ask(client, job.fine_tuned_model, "hi").choices
    engine = create_engine(env["GUARDTUNE_DATABASE_URL"])
    with Session(engine) as session, session.begin():
        revoke_model(session, job.fine_tuned_model, actor="ops:test", reason="serving test")
    engine.dispose()
    with pytest.raises(openai.NotFoundError):
        ask(client, job.fine_tuned_model, "hi")
    with pytest.raises(openai.NotFoundError):
        ask(client, job.fine_tuned_model, "hi", stream=True)
