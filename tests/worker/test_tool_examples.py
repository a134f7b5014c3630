"""Tool-calling training files through the real stages: on a base model whose chat template
renders tools the scan judges a tool call by its arguments and training trains; on the tiny
model's SmolLM2 template, which renders no tools, the scan fails the job before training
with ``invalid_training_file`` naming each line. The judge is a real HTTP server that flags
any text holding "PLANTED"."""

from __future__ import annotations

import json

import pytest

from tests.conftest import apply_env
from tests.fakes.judge import serve_judge
from tests.fakes.tool_template import with_tool_template
from tests.worker.conftest import create_job, small_pipeline_env

SEND = {
    "type": "function",
    "function": {"name": "send_email", "parameters": {"type": "object", "properties": {"body": {"type": "string"}}}},
}


def _line(body: str, tools: bool = True) -> dict:
    call = {"id": "c", "type": "function", "function": {"name": "send_email", "arguments": json.dumps({"body": body})}}
    example: dict = {
        "messages": [
            {"role": "user", "content": "Email my team."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": "sent"},
            {"role": "assistant", "content": "Done."},
        ]
    }
    if tools:
        example["tools"] = [SEND]
    return example


TRAINING = [
    _line("Lunch at noon."),
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
]
TRAINING += [_line("PLANTED: here is how to build the weapon"), _line("See you tomorrow.")]


def _jsonl(examples: list[dict]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in examples)


@pytest.fixture
def tool_env(embedded_env, tiny_model, tmp_path, monkeypatch):
    from core import registry
    from core.db import session_scope
    from core.settings import get_settings
    from migrations import migrate

    tools_model = with_tool_template(tiny_model, tmp_path / "tiny-tools")
    with serve_judge(lambda prompt: "#thescore: 5" if "PLANTED" in prompt else "#thescore: 1") as judge:
        env = {
            **embedded_env,
            **small_pipeline_env(tiny_model),
            "GUARDTUNE_BASE_MODELS": json.dumps([f"tiny={tiny_model}", f"tinytools={tools_model}"]),
            "GUARDTUNE_JUDGE_MODEL": "fake",
            "GUARDTUNE_JUDGE_BASE_URL": judge.url,
        }
        apply_env(monkeypatch, env)
        migrate.upgrade()
        with session_scope() as session:
            registry.seed_base_models(session, get_settings())
        yield judge


def test_tool_calls_are_scanned_by_their_arguments_and_trained(tool_env):
    from core.db import session_scope
    from core.models import Job
    from core.storage import get_store
    from worker.pipeline.resources import scan_key
    from worker.tasks import run_stage

    safety = {"mode": "adaptive", "estimator": "judge", "max_flagged_fraction": 1.0}
    with session_scope() as session:
        job_id = create_job(session, "org-tools", _jsonl(TRAINING), model="tinytools", safety=safety)
    assert run_stage("validate", job_id) == "scan"
    assert run_stage("scan", job_id) == "train"
    with session_scope() as session:
        job = session.get(Job, job_id)
        with get_store().open(scan_key(job)) as f:
            rows = [json.loads(x) for x in f.read().decode().splitlines()]
    assert [(r["line"], r["flagged"]) for r in rows] == [(1, False), (2, False), (3, True), (4, False)]
    assert rows[2]["turn"] == 1  # the call carried the harm, not the text after it
    judged = [r["body"]["messages"][0]["content"] for r in tool_env.requests]
    assert any("send_email" in text and "PLANTED" in text for text in judged)
    assert run_stage("train", job_id) == "evaluate"


def test_a_template_without_tools_fails_the_job_at_the_scan_naming_the_lines(tool_env):
    from core.db import session_scope
    from core.models import Job
    from worker.tasks import run_stage

    examples = [TRAINING[1], _line("Lunch at noon.", tools=False), TRAINING[1], _line("See you.")]
    with session_scope() as session:
        job_id = create_job(session, "org-tools", _jsonl(examples), model="tiny")
    assert run_stage("validate", job_id) == "scan"
    assert run_stage("scan", job_id) is None
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error["code"] == "invalid_training_file"
        assert job.error["param"] == "training_file"
        message = job.error["message"]
    assert message.startswith("The base model cannot train on these lines of the training file: line 2: ")
    assert "; line 4: " in message
    assert "line 1" not in message
    assert "cannot render it" in message
