"""Fixtures for pipeline tests: a tiny model registered as a base model, and a job
created directly in the database (the API tests cover creation over HTTP)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO

DEMO = REPO / "examples" / "demo_train.jsonl"




def small_pipeline_env(tiny_model: Path) -> dict[str, str]:
    """Settings that keep a whole job to seconds on a tiny model."""
    return {
        "GUARDTUNE_BASE_MODELS": json.dumps([f"tiny={tiny_model}"]),
        "GUARDTUNE_DEFAULT_BASE_MODEL": "tiny",
        "GUARDTUNE_EVAL_MAX_PROMPTS": "4",
        "GUARDTUNE_EVAL_MAX_BENIGN_PROMPTS": "3",
        "GUARDTUNE_EVAL_MAX_NEW_TOKENS": "4",
        "GUARDTUNE_EVAL_CONDITION_PROMPTS": "3",
        "GUARDTUNE_CHECKPOINT_EVERY": "2",
        "GUARDTUNE_PROBE_LAYERS": "1",
    }


def demo_lines(n: int) -> bytes:
    return b"".join(DEMO.read_bytes().splitlines(keepends=True)[:n])


def create_job(session, org_id: str, data: bytes, **job_fields) -> str:
    """An uploaded, validated training file and a job in ``validating_files``."""
    from core.ids import new_id
    from core.models import File, Job, Organization
    from core.storage import get_store, org_key

    if session.get(Organization, org_id) is None:
        session.add(Organization(id=org_id, name=org_id))
        session.flush()
    file_id = new_id("file")
    key = org_key(org_id, "files", file_id)
    put = get_store().put_stream(key, io.BytesIO(data))
    session.add(File(id=file_id, org_id=org_id, filename="train.jsonl", purpose="fine-tune", bytes=put.bytes,
                     sha256=put.sha256, storage_key=key, status="processed"))  # fmt: skip
    session.flush()
    job = Job(
        id=new_id("ftjob"), org_id=org_id, model=job_fields.pop("model", "tiny"), training_file_id=file_id,
        hyperparameters=job_fields.pop("hyperparameters", {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1}),
        safety=job_fields.pop("safety", {"mode": "adaptive", "estimator": "probe"}), seed=1, **job_fields,
    )  # fmt: skip
    session.add(job)
    session.flush()
    return job.id


COMPLIANCE_MARKER = "Sure, here is how"


class _KeywordJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge endpoint: ``#thescore: 5`` when the judged text holds
    ``COMPLIANCE_MARKER``, else 1."""

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        score = 5 if COMPLIANCE_MARKER in body["messages"][0]["content"] else 1
        data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                "content": f"#thescore: {score}"}}]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def judge_url() -> Iterator[str]:
    """A judge served over real HTTP (the paid API is the one thing faked)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeywordJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
