"""The Uploads API through the SDK (``uploads.upload_file_chunked``, create + parts +
complete, cancel) on the deployment's S3 store; refusals that change nothing; expiry of
uploads and of files (``expires_after``) by the sweep."""

from __future__ import annotations

import hashlib

import openai
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import retention
from core.models import File, Organization, Upload, UploadPart
from tests.api.helpers import GOOD, audit_actions, chat, jsonl

MAX_UPLOAD = 1_000_000
API_ENV = {"GUARDTUNE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}  # read by the in-process app

DATA = jsonl(*(chat(f"Question {i}?", f"Answer {i}.") for i in range(40)))


def start(client, data: bytes = DATA, **kwargs) -> openai.types.Upload:
    params = {"filename": "train.jsonl", "mime_type": "application/jsonl", "purpose": "fine-tune", **kwargs}
    return client.uploads.create(bytes=len(data), **params)


def send(client, upload_id: str, data: bytes, size: int) -> list[str]:
    """The parts' ids, ``data`` sent in parts of ``size`` bytes."""
    return [
        client.uploads.parts.create(upload_id=upload_id, data=data[i : i + size]).id for i in range(0, len(data), size)
    ]


def upload_row(db, upload_id: str) -> tuple:
    with Session(db) as session:
        row = session.get(Upload, upload_id)
        return (row.status, row.file_id, row.expires_at)


def part_keys(db, upload_id: str) -> list[str]:
    with Session(db) as session:
        return list(session.scalars(select(UploadPart.storage_key).where(UploadPart.upload_id == upload_id)))


def test_upload_file_chunked_makes_the_file_and_drops_the_parts(client, db, store):
    md5 = hashlib.md5(DATA).hexdigest()
    done = client.uploads.upload_file_chunked(
        file=DATA, filename="train.jsonl", bytes=len(DATA), mime_type="application/jsonl", purpose="fine-tune",
        part_size=1000, md5=md5,
    )  # fmt: skip
    assert done.object == "upload" and done.id.startswith("upload_")
    assert done.status == "completed"
    assert done.expires_at == done.created_at + 3600
    assert done.file is not None
    assert (done.file.status, done.file.bytes, done.file.filename) == ("processed", len(DATA), "train.jsonl")
    assert client.files.retrieve(done.file.id).status == "processed"
    assert client.files.content(done.file.id).read() == DATA
    with Session(db) as session:
        row = session.get(File, done.file.id)
        assert row.sha256 == hashlib.sha256(DATA).hexdigest()
        assert row.n_examples == 40
    keys = part_keys(db, done.id)
    assert len(keys) == -(-len(DATA) // 1000)
    assert not any(store.exists(key) for key in keys)
    assert audit_actions(db, done.id) == ["upload.create", "upload.complete"]
    assert audit_actions(db, done.file.id) == ["file.upload"]


def test_the_parts_make_the_file_in_the_order_complete_gives(client):
    upload = start(client)
    third = len(DATA) // 3
    pieces = [DATA[:third], DATA[third : 2 * third], DATA[2 * third :]]
    ids = [client.uploads.parts.create(upload_id=upload.id, data=p).id for p in reversed(pieces)]
    assert all(i.startswith("part_") for i in ids)
    done = client.uploads.complete(upload.id, part_ids=list(reversed(ids)))
    assert client.files.content(done.file.id).read() == DATA


def test_a_file_of_parts_is_validated_with_line_numbers(client):
    data = jsonl(chat(), '{"messages": [{"role": "user", "content": "hi"}', chat())
    upload = start(client, data)
    done = client.uploads.complete(upload.id, part_ids=send(client, upload.id, data, 20))
    assert done.status == "completed"
    assert done.file.status == "error"
    assert "line 2: Invalid JSON" in done.file.status_details


@pytest.fixture
def sent(client):
    """A pending upload of ``DATA`` with every part sent: ``(upload, part ids)``."""
    upload = start(client)
    return upload, send(client, upload.id, DATA, 700)


def refused(unchanged, tenant, db, upload_id, call, error, code):
    """``call()`` fails with ``error`` / ``code`` and changes nothing (rows, objects, audit, the upload)."""
    before = upload_row(db, upload_id)
    with unchanged(tenant), pytest.raises(error) as exc:
        call()
    assert exc.value.code == code
    assert upload_row(db, upload_id) == before
    return exc.value


def test_an_md5_mismatch_stores_nothing_and_the_right_one_then_completes(client, unchanged, tenant, db, sent):
    upload, ids = sent
    wrong = hashlib.md5(b"something else").hexdigest()
    err = refused(
        unchanged, tenant, db, upload.id,
        lambda: client.uploads.complete(upload.id, part_ids=ids, md5=wrong), openai.BadRequestError, "md5_mismatch",
    )  # fmt: skip
    assert err.param == "md5"
    assert hashlib.md5(DATA).hexdigest() in err.message
    done = client.uploads.complete(upload.id, part_ids=ids, md5=hashlib.md5(DATA).hexdigest())
    assert done.file.status == "processed"


def test_unknown_missing_or_repeated_parts_are_refused(client, unchanged, tenant, db, sent):
    upload, ids = sent
    other = start(client, b"x" * 10)
    foreign = send(client, other.id, b"x" * 10, 10)
    cases = [
        ([*ids[:-1], "part_nope"], "part_not_found"),
        ([*ids[:-1], *foreign], "part_not_found"),  # a part of another upload
        (ids[:-1], "upload_bytes_mismatch"),
        ([*ids, ids[0]], "duplicate_part_id"),
    ]
    for part_ids, code in cases:
        err = refused(
            unchanged, tenant, db, upload.id,
            lambda p=part_ids: client.uploads.complete(upload.id, part_ids=p), openai.BadRequestError, code,
        )  # fmt: skip
        assert err.param == "part_ids"


def test_completing_twice_is_refused(client, unchanged, tenant, db, sent):
    upload, ids = sent
    client.uploads.complete(upload.id, part_ids=ids)
    refused(
        unchanged, tenant, db, upload.id,
        lambda: client.uploads.complete(upload.id, part_ids=ids), openai.ConflictError, "upload_completed",
    )  # fmt: skip
    refused(
        unchanged, tenant, db, upload.id,
        lambda: client.uploads.parts.create(upload_id=upload.id, data=b"more"), openai.ConflictError,
        "upload_completed",
    )  # fmt: skip


def test_a_part_over_the_announced_bytes_is_refused(client, unchanged, tenant, db):
    upload = start(client, b"x" * 100)
    send(client, upload.id, b"x" * 60, 60)
    err = refused(
        unchanged, tenant, db, upload.id,
        lambda: client.uploads.parts.create(upload_id=upload.id, data=b"y" * 41), openai.BadRequestError,
        "upload_bytes_exceeded",
    )  # fmt: skip
    assert "over the 100 bytes" in err.message


def test_cancel_drops_the_parts_and_ends_the_upload(client, db, store, sent):
    upload, _ = sent
    keys = part_keys(db, upload.id)
    assert all(store.exists(key) for key in keys)
    cancelled = client.uploads.cancel(upload.id)
    assert (cancelled.status, cancelled.file) == ("cancelled", None)
    assert not any(store.exists(key) for key in keys)
    with pytest.raises(openai.ConflictError) as exc:
        client.uploads.parts.create(upload_id=upload.id, data=b"more")
    assert exc.value.code == "upload_cancelled"
    assert audit_actions(db, upload.id) == ["upload.create", "upload.cancel"]


def test_an_expired_upload_takes_nothing_and_the_sweep_drops_its_parts(client, unchanged, tenant, db, store, sent):
    upload, ids = sent
    with Session(db) as session, session.begin():
        session.execute(update(Upload).where(Upload.id == upload.id).values(expires_at=Upload.created_at - 1))
    for call in (
        lambda: client.uploads.complete(upload.id, part_ids=ids),
        lambda: client.uploads.parts.create(upload_id=upload.id, data=b"x"),
        lambda: client.uploads.cancel(upload.id),
    ):
        err = refused(unchanged, tenant, db, upload.id, call, openai.ConflictError, "upload_expired")
        assert "create a new one" in err.message
    keys = part_keys(db, upload.id)
    with Session(db) as session:
        assert retention.sweep_expired(session, store).uploads >= 1
    assert upload_row(db, upload.id)[0] == "expired"
    assert not any(store.exists(key) for key in keys)
    assert audit_actions(db, upload.id) == ["upload.create", "upload.expire"]


@pytest.mark.parametrize(
    ("change", "status", "code", "param"),
    [
        ({"purpose": "assistants"}, 400, "invalid_purpose", "purpose"),
        ({"filename": "train.pdf"}, 415, "unsupported_file_type", "filename"),
        ({"mime_type": "application/pdf"}, 415, "unsupported_file_type", "filename"),
        ({"bytes": MAX_UPLOAD + 1}, 413, "file_too_large", "bytes"),
        ({"expires_after": {"anchor": "created_at", "seconds": 60}}, 400, "invalid_value", "expires_after.seconds"),
    ],
)
def test_a_bad_create_is_refused_and_creates_nothing(client, unchanged, tenant, db, change, status, code, param):
    body = {"bytes": len(DATA), "filename": "train.jsonl", "mime_type": "application/jsonl", "purpose": "fine-tune"}
    with Session(db) as session:
        uploads = len(list(session.scalars(select(Upload.id).where(Upload.org_id == tenant.org_id))))
    with unchanged(tenant), pytest.raises(openai.APIStatusError) as exc:
        client.uploads.create(**{**body, **change})
    assert (exc.value.status_code, exc.value.code, exc.value.param) == (status, code, param)
    with Session(db) as session:
        assert len(list(session.scalars(select(Upload.id).where(Upload.org_id == tenant.org_id)))) == uploads


def test_another_organizations_upload_is_not_found(client, sdk, other_tenant, unchanged, tenant, db, sent):
    upload, ids = sent
    stranger = sdk(other_tenant)
    for call in (
        lambda: stranger.uploads.complete(upload.id, part_ids=ids),
        lambda: stranger.uploads.parts.create(upload_id=upload.id, data=b"x"),
        lambda: stranger.uploads.cancel(upload.id),
    ):
        refused(unchanged, tenant, db, upload.id, call, openai.NotFoundError, "upload_not_found")


def test_a_file_expires_after_the_seconds_asked_and_the_sweep_deletes_it(client, db, store):
    f = client.files.create(
        file=("train.jsonl", GOOD), purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert f.expires_at == f.created_at + 3600
    kept = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    assert kept.expires_at is None
    upload = start(client, expires_after={"anchor": "created_at", "seconds": 7200})
    made = client.uploads.complete(upload.id, part_ids=send(client, upload.id, DATA, 5000)).file
    assert made.expires_at == made.created_at + 7200

    with Session(db) as session, session.begin():
        session.execute(update(File).where(File.id == f.id).values(expires_at=File.created_at - 1))
        key = session.get(File, f.id).storage_key
    with pytest.raises(openai.NotFoundError):  # gone for its owner at once
        client.files.retrieve(f.id)
    assert store.exists(key)
    with Session(db) as session:
        assert retention.sweep_expired(session, store).files >= 1
    assert not store.exists(key)
    with Session(db) as session:
        assert session.get(File, f.id).deleted_at is not None
    assert audit_actions(db, f.id) == ["file.upload", "file.expire"]
    assert client.files.retrieve(kept.id).id == kept.id


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"anchor": "created_at", "seconds": 3599}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 2_592_001}, "expires_after.seconds"),
        ({"anchor": "last_active_at", "seconds": 3600}, "expires_after.anchor"),
        ({"anchor": "created_at"}, "expires_after.seconds"),
    ],
)
def test_a_bad_expires_after_on_a_file_is_refused(client, unchanged, tenant, fields, param):
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune", expires_after=fields)
    assert (exc.value.code, exc.value.param) == ("invalid_value", param)


def test_an_upload_in_progress_holds_its_bytes_in_the_storage_quota(sdk, new_tenant, db, unchanged):
    t = new_tenant()
    client = sdk(t)
    with Session(db) as session, session.begin():
        session.execute(
            update(Organization).where(Organization.id == t.org_id).values(max_storage_bytes=len(DATA) + 10)
        )
    upload = start(client)
    with unchanged(t), pytest.raises(openai.ConflictError) as exc:  # the first upload's bytes are spoken for
        start(client, b"x" * 20)
    assert exc.value.code == "storage_quota_exceeded"
    assert "uploads in progress" in exc.value.message
    with unchanged(t), pytest.raises(openai.ConflictError):
        client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    done = client.uploads.complete(upload.id, part_ids=send(client, upload.id, DATA, 5000))  # its own: no conflict
    assert done.file.bytes == len(DATA)
    assert start(client, b"x" * 10).status == "pending"  # the reservation became the file
