"""Driving jobs through the ``openai`` SDK on a stack under test (the fixtures in
``tests/worker/conftest.py``): upload demo lines, wait for a condition or a terminal
status, list every event, read a JSONL object back from the deployment's bucket."""

from __future__ import annotations

import json
import time

from openai import OpenAI

from core.jobs.vocab import TERMINAL
from core.settings import Settings
from core.storage import make_store
from tests.worker.conftest import DEMO


def upload(client: OpenAI, n_lines: int = 16) -> str:
    data = b"".join(DEMO.read_bytes().splitlines(keepends=True)[:n_lines])
    return client.files.create(file=("train.jsonl", data), purpose="fine-tune").id


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.3):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def all_events(client: OpenAI, job_id: str) -> list:
    """The job's events, every page, oldest first."""
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))[::-1]


def finished(client: OpenAI, job_id: str, timeout_s: float = 240):
    return wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and j,
        timeout_s,
        f"{job_id} to finish",
    )


def stored_jsonl(env: dict[str, str], key: str) -> list[dict]:
    """Rows of a JSONL object in the deployment's S3 bucket."""
    store = make_store(env["GUARDTUNE_STORAGE_URL"], Settings(s3_endpoint_url=env["GUARDTUNE_S3_ENDPOINT_URL"]))
    return [json.loads(r) for r in b"".join(store.iter_chunks(key)).decode().splitlines()]
