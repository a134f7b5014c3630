"""The scan stage scores every trained assistant turn (system prompt included) and its
report -- ``scan.jsonl`` and the summary -- names the line and the turn of each flagged
example. The judge is a real HTTP server that flags any text holding "PLANTED"."""

from __future__ import annotations

import json

import pytest

from tests.conftest import apply_env, clear_caches
from tests.fakes.judge import serve_judge
from tests.worker.conftest import create_job, small_pipeline_env


@pytest.fixture
def judged_env(embedded_env, tiny_model, monkeypatch):
    from core import registry
    from core.db import session_scope
    from core.settings import get_settings
    from migrations import migrate

    with serve_judge(lambda prompt: "#thescore: 5" if "PLANTED" in prompt else "#thescore: 1") as judge:
        apply_env(
            monkeypatch,
            {
                **embedded_env,
                **small_pipeline_env(tiny_model),
                "GUARDTUNE_JUDGE_MODEL": "fake",
                "GUARDTUNE_JUDGE_BASE_URL": judge.url,
            },
        )
        migrate.upgrade()
        with session_scope() as session:
            registry.seed_base_models(session, get_settings())
        yield


def _chat(*turns: tuple[str, str], system: str | None = None) -> bytes:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return json.dumps({"messages": messages}).encode() + b"\n"


def test_scan_flags_earlier_turns_and_system_prompts_by_line_and_turn(judged_env, monkeypatch):
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import Job, JobEvent, SafetyReport
    from core.storage import get_store
    from worker.pipeline.resources import scan_key
    from worker.tasks import run_stage

    data = b"".join(
        [
            _chat(("Hi", "Hello!")),
            _chat(("Help me?", "PLANTED harmful answer"), ("Thanks", "You're welcome.")),  # harmful turn 1 of 2
            _chat(("Name a fruit.", "Apple."), system="PLANTED: obey every order"),  # harmful system prompt
            _chat(("Hi", "Hello!"), ("More?", "Sure."), ("Again?", "PLANTED again")),  # harmful last of 3 turns
            _chat(("Tea or coffee?", "Tea.")),
        ]
    )
    with session_scope() as session:
        job_id = create_job(session, "org-s", data, safety={"mode": "adaptive", "estimator": "judge"})
    assert run_stage("validate", job_id) == "scan"
    assert run_stage("scan", job_id) == "train"
    with session_scope() as session:
        job = session.get(Job, job_id)
        scan = session.get(SafetyReport, job_id).scan
        with get_store().open(scan_key(job)) as f:
            rows = [json.loads(x) for x in f.read().decode().splitlines()]
    assert [(r["line"], r["turn"], r["flagged"], r["judge_score"]) for r in rows] == [
        (1, 1, False, 1),
        (2, 1, True, 5),
        (3, 1, True, 5),
        (4, 3, True, 5),
        (5, 1, False, 1),
    ]
    assert [(r["line"], r["turn"]) for r in scan["top_flagged"]] == [(2, 1), (3, 1), (4, 3)]
    assert scan["n_flagged"] == 3
    assert scan["n"] == 5

    monkeypatch.setenv("GUARDTUNE_MAX_FLAGGED_FRACTION", "0.25")
    clear_caches()
    with session_scope() as session:
        job_id = create_job(session, "org-s", data, safety={"mode": "adaptive", "estimator": "judge"})
    assert run_stage("validate", job_id) == "scan"
    assert run_stage("scan", job_id) is None  # 3 of 5 flagged, above the 25 % limit
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error["code"] == "unsafe_training_file"
        assert "Flagged lines include: 2 (turn 1), 3 (turn 1), 4 (turn 3)." in job.error["message"]
        refused = session.get(SafetyReport, job_id).scan  # kept for the customer, not rolled back
        assert refused["n_flagged"] == 3
        assert [(r["line"], r["turn"]) for r in refused["top_flagged"]] == [
            (2, 1),
            (3, 1),
            (4, 3),
        ]
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        assert any(m.startswith("Scanned 5 examples: 3 flagged") for m in events)
