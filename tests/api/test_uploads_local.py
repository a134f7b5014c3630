"""The Uploads API on the local-folder store (the embedded default's): parts as files of
their own, concatenated on complete into the file, then removed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import File, UploadPart
from core.storage import LocalStore
from tests.api.helpers import chat, jsonl

API_ENV = {"GUARDTUNE_STORAGE_URL": ""}  # the folder under GUARDTUNE_HOME (read by the in-process app)

DATA = jsonl(*(chat(f"Question {i}?", f"Answer {i}.") for i in range(30)))


@pytest.fixture(scope="module")
def folder(deployment_env) -> LocalStore:
    return LocalStore(Path(deployment_env["GUARDTUNE_HOME"]) / "objects")


def test_upload_file_chunked_on_the_local_store(sdk, tenant, db, folder):
    client = sdk(tenant)
    done = client.uploads.upload_file_chunked(
        file=DATA, filename="train.jsonl", bytes=len(DATA), mime_type="application/jsonl", purpose="fine-tune",
        part_size=500, md5=hashlib.md5(DATA).hexdigest(),
    )  # fmt: skip
    assert (done.status, done.file.status, done.file.bytes) == ("completed", "processed", len(DATA))
    with Session(db) as session:
        key = session.get(File, done.file.id).storage_key
        parts = list(session.scalars(select(UploadPart.storage_key).where(UploadPart.upload_id == done.id)))
    assert len(parts) == -(-len(DATA) // 500)
    assert b"".join(folder.iter_chunks(key)) == DATA
    assert client.files.content(done.file.id).read() == DATA
    assert not any(folder.exists(part) for part in parts)
    assert folder.list(f"orgs/{tenant.org_id}/uploads/") == []
