"""Uploads: validation results with line numbers, and refusals that leave nothing behind."""

from __future__ import annotations

import json

import openai
import pytest
from sqlalchemy.orm import Session

from core.models import File
from tests.api.helpers import BASE_MODEL, GOOD, auth, chat, jsonl


def upload(client, data: bytes, name: str = "train.jsonl"):
    return client.files.create(file=(name, data), purpose="fine-tune")


def error_lines(db, file_id: str) -> list[dict]:
    with Session(db) as session:
        return session.get(File, file_id).errors


def test_bad_json_reports_the_line(client, db):
    f = upload(client, jsonl(chat(), '{"messages": [{"role": "user", "content": "hi"}', chat()))
    assert f.status == "error"
    assert f.status_details.startswith("Validation failed: 1 error")
    assert "line 2: Invalid JSON" in f.status_details
    assert error_lines(db, f.id) == [{"line": 2, "message": f.status_details.split("line 2: ")[1]}]


def test_deleting_a_file_deletes_its_object_and_the_errors_quoting_it(client, db, store):
    bad = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    f = upload(client, jsonl(chat(), bad))
    with Session(db) as session:
        key = session.get(File, f.id).storage_key
    assert store.exists(key)
    assert client.files.delete(f.id).deleted is True
    assert not store.exists(key)
    with Session(db) as session:
        row = session.get(File, f.id)
        assert row.errors == []
        assert row.status_details is None


def test_wrong_role(client):
    bad = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    f = upload(client, jsonl(chat(), chat(), bad))
    assert f.status == "error"
    assert "line 3: messages[0].role is 'human'; it must be one of system, user, assistant, tool." in f.status_details


def test_no_assistant_turn(client):
    only_user = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}
    empty_answer = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}
    not_trained = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 0}]}
    f = upload(client, jsonl(only_user, chat(), empty_answer, not_trained))
    assert f.status == "error"
    for line in (1, 3, 4):
        assert f"line {line}: The example has no assistant message with content to train on." in f.status_details
    assert "line 2" not in f.status_details


def test_content_must_be_a_string_and_a_file_must_keep_one_format(client):
    f = upload(
        client,
        jsonl(
            chat(),
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},
            {"prompt": "Say hi", "completion": "hi"},
            [1, 2],
            {"text": "no format"},
        ),
    )
    assert f.status == "error"
    details = f.status_details
    assert "line 2: messages[0].content must be a string (a number)." in details
    assert "line 3: The example uses the prompt/completion format but earlier lines use the chat" in details
    assert "line 4: Each line must be a JSON object, not an array." in details
    assert "line 5: Missing 'messages'" in details


def test_prompt_completion_format_is_accepted(client):
    f = upload(client, jsonl({"prompt": "Say hi", "completion": "hi"}, {"prompt": "2+2", "completion": "4"}))
    assert f.status == "processed"
    assert f.status_details is None


def test_first_20_errors_are_listed_with_the_total(client, db):
    f = upload(client, jsonl(*(["not json"] * 25), chat()))
    assert f.status == "error"
    assert f.status_details.startswith("Validation failed: 25 errors (showing the first 20):")
    assert [e["line"] for e in error_lines(db, f.id)] == list(range(1, 21))
    assert "line 21" not in f.status_details


def test_empty_file(client):
    f = upload(client, b"\n\n")
    assert f.status == "error"
    assert "no training examples" in f.status_details


def test_a_job_refuses_a_file_that_failed_validation(client, tenant, unchanged):
    bad = upload(client, jsonl("{oops"))
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=bad.id)
    assert err.value.code == "invalid_training_file"
    assert err.value.param == "training_file"
    assert "line 1: Invalid JSON" in err.value.message
    good = upload(client, GOOD)
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=good.id, validation_file=bad.id)
    assert err.value.code == "invalid_validation_file"
    assert err.value.param == "validation_file"


def test_wrong_purpose_is_refused_and_nothing_is_stored(client, tenant, unchanged):
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("train.jsonl", GOOD), purpose="assistants")
    assert err.value.code == "invalid_purpose"
    assert err.value.param == "purpose"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("train.csv", "text/csv"), ("train.txt", "text/plain"), ("train.jsonl", "image/png"), ("data", None)],
)
def test_non_jsonl_is_refused_with_415(http, tenant, unchanged, name, content_type):
    part = (name, GOOD, content_type) if content_type else (name, GOOD)
    with unchanged(tenant):
        r = http.post("/v1/files", headers=auth(tenant), files={"file": part}, data={"purpose": "fine-tune"})
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_file_type"
    assert r.json()["error"]["param"] == "file"


def test_not_multipart_is_refused(http, tenant, unchanged):
    with unchanged(tenant):
        r = http.post("/v1/files", headers=auth(tenant), json={"file": "x", "purpose": "fine-tune"})
    assert r.status_code == 415
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_missing_file_or_purpose(http, tenant, unchanged):
    with unchanged(tenant):
        r = http.post("/v1/files", headers=auth(tenant), data={"purpose": "fine-tune"}, files={"other": ("", b"")})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "file"
        r = http.post("/v1/files", headers=auth(tenant), files={"file": ("t.jsonl", GOOD)})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "missing_purpose"


def test_file_in_use_cannot_be_deleted(client, tenant, unchanged):
    f = upload(client, GOOD)
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    with unchanged(tenant), pytest.raises(openai.ConflictError) as err:
        client.files.delete(f.id)
    assert err.value.code == "file_in_use"
    assert job.id in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"
    client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(f.id).deleted is True


def test_list_pagination_and_order(client, sdk, new_tenant):
    fresh = sdk(new_tenant())
    ids = {upload(fresh, GOOD, f"t{i}.jsonl").id for i in range(3)}
    # newest first by created_at (seconds; ties broken by id): pages partition the list
    everything = fresh.files.list()
    assert set(f.id for f in everything.data) == ids
    assert everything.has_more is False
    order = [f.id for f in everything.data]
    assert [f.created_at for f in everything.data] == sorted((f.created_at for f in everything.data), reverse=True)
    first = fresh.files.list(limit=2)
    assert [f.id for f in first.data] == order[:2]
    assert first.has_more is True
    rest = fresh.files.list(limit=2, after=first.data[-1].id)
    assert [f.id for f in rest.data] == order[2:]
    assert rest.has_more is False
    assert [f.id for f in fresh.files.list(order="asc")] == order[::-1]
    assert [f.id for f in fresh.files.list(purpose="batch")] == []


def test_utf8_and_bom(client):
    data = "\ufeff".encode() + json.dumps(chat("¿Qué tal?", "Très bien — 谢谢"), ensure_ascii=False).encode()
    f = upload(client, data)
    assert f.status == "processed", f.status_details
    assert client.files.content(f.id).read() == data
    bad = upload(client, jsonl(chat()) + b'{"prompt": "\xff\xfe"}\n')
    assert bad.status == "error"
    assert "line 2: The line is not valid UTF-8" in bad.status_details
