"""Object storage: the same behaviour over a local folder and a real S3 endpoint."""

from __future__ import annotations

import hashlib
import io

import httpx
import pytest

from core.settings import Settings
from core.storage import LocalStore, ObjectTooLarge, S3Store, WriteOnceViolation, download_dir, org_key, upload_dir


class CountingReader(io.RawIOBase):
    """A stream that records the largest read, to prove uploads go in chunks."""

    def __init__(self, size: int):
        self.remaining, self.max_read = size, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.max_read = max(self.max_read, n)
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return b"a" * n


@pytest.fixture(params=["local", "s3", "s3-versioned"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "objects")
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("locked_bucket") if request.param == "s3-versioned" else s3.bucket
    return S3Store(bucket, f"t-{tmp_path.name}", Settings(s3_endpoint_url=s3.endpoint))


def _versions(store: S3Store, key: str) -> list[str]:
    """Every version and delete marker the bucket keeps of ``key``."""
    listed = store.client.list_object_versions(Bucket=store.bucket, Prefix=store._key(key))
    found = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
    return [v["Key"].removeprefix(store.prefix + "/") for v in found]


def test_put_get_list_delete_round_trip(store):
    key = org_key("org-1", "files", "file-1.jsonl")
    assert key == "orgs/org-1/files/file-1.jsonl"
    result = store.put_stream(key, io.BytesIO(b"hello\nworld\n"))
    assert result.bytes == 12
    assert result.sha256 == hashlib.sha256(b"hello\nworld\n").hexdigest()
    assert store.exists(key)
    assert store.size(key) == 12
    assert b"".join(store.iter_chunks(key, chunk_size=4)) == b"hello\nworld\n"
    with store.open(key) as f:
        assert f.read() == b"hello\nworld\n"
    assert store.list("orgs/org-1/") == [key]
    assert store.list("orgs/org-2/") == []
    store.delete(key)
    assert not store.exists(key)


def test_put_streams_in_chunks_and_enforces_limit(store):
    reader = CountingReader(5 * 1024 * 1024)
    assert store.put_stream("orgs/o/big", reader).bytes == 5 * 1024 * 1024
    assert reader.max_read <= 1024 * 1024
    with pytest.raises(ObjectTooLarge):
        store.put_stream("orgs/o/too-big", io.BytesIO(b"x" * 101), max_bytes=100)
    assert not store.exists("orgs/o/too-big")


def test_directory_upload_download(store, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    keys = upload_dir(store, src, "orgs/o/ckpt/step-1")
    assert keys == ["orgs/o/ckpt/step-1/a.json", "orgs/o/ckpt/step-1/sub/b.bin"]
    out = download_dir(store, "orgs/o/ckpt/step-1", tmp_path / "out")
    assert (out / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    store.delete_prefix("orgs/o/ckpt")
    assert store.list("orgs/o/ckpt") == []


def test_key_parts_cannot_escape():
    with pytest.raises(ValueError):
        org_key("org-1", "../org-2/secret")


def test_s3_presigned_url_downloads_over_http(s3, tmp_path):
    store = S3Store(s3.bucket, "presign", Settings(s3_endpoint_url=s3.endpoint))
    store.put_stream("orgs/o/x.txt", io.BytesIO(b"payload"))
    url = store.presigned_url("orgs/o/x.txt")
    assert url
    assert url.startswith(s3.endpoint)
    assert httpx.get(url).content == b"payload"
    assert LocalStore(tmp_path).presigned_url("k") is None


def test_a_write_once_object_is_never_replaced(store):
    store.put_once("audit/anchors/1.json", b"first")
    with pytest.raises(WriteOnceViolation):
        store.put_once("audit/anchors/1.json", b"second")
    assert b"".join(store.iter_chunks("audit/anchors/1.json")) == b"first"
    assert store.list("audit/") == ["audit/anchors/1.json"]
    assert store.removed("audit/") == []


def test_the_local_store_refuses_to_delete_or_overwrite_a_write_once_object(tmp_path):
    store = LocalStore(tmp_path / "objects")
    store.put_once("audit/anchors/1.json", b"first")
    store.put_stream("audit/notes.txt", io.BytesIO(b"ordinary"))
    with pytest.raises(WriteOnceViolation):
        store.delete("audit/anchors/1.json")
    with pytest.raises(WriteOnceViolation):
        store.put_stream("audit/anchors/1.json", io.BytesIO(b"second"))
    with pytest.raises(WriteOnceViolation):
        store.delete_prefix("audit")
    assert store.list("audit/") == ["audit/anchors/1.json", "audit/notes.txt"]  # nothing went
    store.delete("audit/notes.txt")
    assert not store.exists("audit/notes.txt")


def test_deleting_leaves_no_version_behind(store):
    """On a versioned bucket a plain delete would only hide the bytes under a marker."""
    store.put_stream("orgs/o/files/f", io.BytesIO(b"v1"))
    store.put_stream("orgs/o/files/f", io.BytesIO(b"v2"))
    store.put_stream("orgs/o/files/f-kept", io.BytesIO(b"other"))
    store.put_stream("orgs/o/jobs/j/checkpoints/a", io.BytesIO(b"c"))
    store.put_stream("orgs/o/jobs/j/checkpoints/a", io.BytesIO(b"c2"))
    store.delete("orgs/o/files/f")
    store.delete_prefix("orgs/o/jobs/")
    assert store.list("orgs/o/") == ["orgs/o/files/f-kept"]
    if isinstance(store, S3Store):
        assert _versions(store, "orgs/o/files/f") == ["orgs/o/files/f-kept"]  # the prefix lists its neighbour only
        assert _versions(store, "orgs/o/jobs/") == []


def test_total_bytes_sums_every_object_under_a_prefix(store):
    store.put_stream("orgs/o/jobs/j/checkpoints/step-000001/a", io.BytesIO(b"x" * 10))
    store.put_stream("orgs/o/jobs/j/adapter/b", io.BytesIO(b"y" * 5))
    store.put_stream("orgs/o/files/f", io.BytesIO(b"z" * 7))
    store.put_stream("orgs/other/jobs/j/c", io.BytesIO(b"w" * 3))
    assert store.total_bytes("orgs/o/jobs/") == 15
    assert store.total_bytes("orgs/o/") == 22
    assert store.total_bytes("orgs/none/") == 0


def test_compose_concatenates_the_sources_in_the_order_given(store):
    sizes = {"a": 6 * 1024 * 1024, "b": 3 * 1024 * 1024, "c": 1, "d": 2 * 1024 * 1024}
    parts = {name: name.encode() * size for name, size in sizes.items()}
    for name, data in parts.items():
        store.put_stream(f"orgs/o/parts/{name}", io.BytesIO(data))
    order = ["c", "a", "d", "b"]
    whole = b"".join(parts[name] for name in order)
    result = store.compose("orgs/o/whole", [f"orgs/o/parts/{name}" for name in order])
    assert (result.bytes, result.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert store.size("orgs/o/whole") == len(whole)
    assert hashlib.sha256(b"".join(store.iter_chunks("orgs/o/whole"))).digest() == hashlib.sha256(whole).digest()
    assert store.list("orgs/o/parts/") == [f"orgs/o/parts/{name}" for name in sorted(parts)]  # the sources stay
    if isinstance(store, S3Store):  # one multipart upload (its ETag counts the parts), streamed from the sources
        etag = store.client.head_object(Bucket=store.bucket, Key=store._key("orgs/o/whole"))["ETag"]
        assert etag.strip('"').endswith("-2")
