"""Size limits on a server of its own (small limits), and a broker that is down."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.api.helpers import BASE_MODEL, audit_actions, auth, chat, jsonl

MAX_FILE, MAX_UPLOAD = 2048, 8192
API_ENV = {  # read by the ``live_api`` fixture and the in-process app
    "GUARDTUNE_MAX_FILE_BYTES": str(MAX_FILE),
    "GUARDTUNE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    "GUARDTUNE_MAX_EXAMPLE_CHARS": "300",
    "GUARDTUNE_MAX_EXAMPLES": "5",
    "GUARDTUNE_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens there
}


def exactly(n: int) -> bytes:
    data = jsonl(chat("hi", "hello"))
    return data + b"\n" * (n - len(data))  # blank lines are allowed


def test_a_file_at_the_limit_is_accepted(client):
    f = client.files.create(file=("edge.jsonl", exactly(MAX_FILE)), purpose="fine-tune")
    assert f.bytes == MAX_FILE
    assert f.status == "processed"


@pytest.mark.parametrize("size", [MAX_FILE + 1, 5000, 200_000])  # streamed check / Content-Length check
def test_oversize_upload_is_refused_with_413_and_nothing_stored(client, tenant, unchanged, size):
    with unchanged(tenant), pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", exactly(size)), purpose="fine-tune")
    assert err.value.status_code == 413
    assert err.value.code == "file_too_large"
    assert str(MAX_FILE) in err.value.message


def test_a_file_over_the_file_limit_goes_through_the_uploads_api(client):
    """``GUARDTUNE_MAX_FILE_BYTES`` bounds ``POST /v1/files`` alone: the Uploads API keeps
    its own, larger limit."""
    size = MAX_FILE + 1000
    done = client.uploads.upload_file_chunked(
        file=exactly(size), filename="big.jsonl", bytes=size, mime_type="application/jsonl", purpose="fine-tune"
    )
    assert (done.status, done.file.status, done.file.bytes) == ("completed", "processed", size)
    with pytest.raises(openai.APIStatusError) as err:
        client.uploads.create(
            bytes=MAX_UPLOAD + 1, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
        )
    assert err.value.status_code == 413
    assert str(MAX_UPLOAD) in err.value.message


def test_oversize_chunked_upload_without_length_is_cut_off(live_api, tenant, unchanged):
    boundary = "gt-boundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        for _ in range(64):  # 64 KiB in all, sent as a stream of unknown length
            yield jsonl(chat("x" * 500, "y" * 500))
        yield f"\r\n--{boundary}--\r\n".encode()

    with unchanged(tenant):
        r = httpx.post(
            f"{live_api.base_url}/v1/files",
            headers={**auth(tenant), "Content-Type": f"multipart/form-data; boundary={boundary}"},
            content=body(),
            timeout=30,
        )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "file_too_large"


def test_over_long_example_and_too_many_examples(client):
    f = client.files.create(file=("long.jsonl", jsonl(chat(), chat("q" * 200, "a" * 200))), purpose="fine-tune")
    assert f.status == "error"
    assert "line 2: The example is too long: 400 characters, over the limit of 300." in f.status_details
    f = client.files.create(file=("many.jsonl", jsonl(*[chat()] * 6)), purpose="fine-tune")
    assert f.status == "error"
    assert "line 6: The file has more than 5 examples" in f.status_details


def test_broker_down_fails_the_job_visibly(client, db):
    f = client.files.create(file=("t.jsonl", jsonl(chat())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    assert job.status == "failed"
    assert job.error.code == "queue_unavailable"
    assert "Create it again" in job.error.message
    assert client.fine_tuning.jobs.retrieve(job.id).status == "failed"
    assert audit_actions(db, job.id) == ["job.create", "job.fail"]
    events = client.fine_tuning.jobs.list_events(job.id)
    assert events.data[0].level == "error"
    assert json.loads(events.data[0].model_dump_json())["message"]
