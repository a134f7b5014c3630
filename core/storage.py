"""Object storage: one interface over a local folder (``file://``) and S3 (``s3://bucket``).

Everything streams in chunks; nothing reads a whole object into memory. Keys are
namespaced by organization with :func:`org_key`.

Write-once objects (:meth:`ObjectStore.put_once`, the audit anchors) are never replaced or
deleted through a store: the local folder keeps them read-only and refuses both; on S3 the
put is conditional (``If-None-Match: *``) and, with ``GUARDTUNE_AUDIT_ANCHOR_RETENTION_DAYS``,
carries an Object Lock retention in compliance mode (no one, the bucket's owner included,
removes the version before it ends; a plain delete only leaves a delete marker, which
:meth:`ObjectStore.removed` reports).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol
from urllib.parse import urlparse

from core.settings import Settings, get_settings

CHUNK = 1024 * 1024


class ObjectTooLarge(Exception):
    """Raised by :meth:`ObjectStore.put_stream` when a stream exceeds ``max_bytes``."""


class WriteOnceViolation(Exception):
    """Raised when a write-once object would be replaced or deleted."""


class Readable(Protocol):
    """What :meth:`ObjectStore.put_stream` reads from (a binary file, a :class:`ConcatReader`)."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class PutResult:
    bytes: int
    sha256: str


def org_key(org_id: str, *parts: str) -> str:
    """The storage key of an organization's object, e.g. ``orgs/org-1/files/file-2``."""
    clean = [p.strip("/") for p in parts if p]
    if any(".." in p.split("/") for p in clean):
        raise ValueError("storage key parts must not contain '..'")
    return "/".join(["orgs", org_id, *clean])


class ObjectStore(Protocol):
    def put_stream(self, key: str, stream: Readable, max_bytes: int | None = None) -> PutResult:
        """Copy ``stream`` to ``key`` in chunks. Over ``max_bytes`` nothing is stored
        and :class:`ObjectTooLarge` is raised."""

    def put_once(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` as a write-once object; :class:`WriteOnceViolation` if
        ``key`` exists (nothing is replaced)."""

    def compose(self, key: str, sources: list[str]) -> PutResult:
        """Store the concatenation of the objects ``sources``, in that order, at ``key``
        (streamed: no object is read whole; the sources stay)."""

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...
    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object (caller closes it)."""

    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def removed(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` deleted while an older version is kept (an S3 delete marker
        on a versioned bucket); [] where the store keeps no versions."""

    def list(self, prefix: str) -> list[str]: ...
    def size(self, key: str) -> int: ...
    def total_bytes(self, prefix: str) -> int:
        """The summed size of every object under ``prefix`` (one listing, no per-object call)."""

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A URL a client can download from directly, or None (stream through the API)."""

    def check(self) -> None:
        """Raise if the store is unreachable."""


def _copy_hashing(stream: Readable, out: IO[bytes], max_bytes: int | None) -> PutResult:
    digest, total = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise ObjectTooLarge(f"object exceeds {max_bytes} bytes")
        digest.update(chunk)
        out.write(chunk)
    return PutResult(total, digest.hexdigest())


class ConcatReader(io.RawIOBase):
    """The objects ``keys`` of ``store`` read as one stream, in order, one object open at a
    time; ``md5``, ``sha256`` and ``bytes`` describe what has been read so far."""

    def __init__(self, store: ObjectStore, keys: list[str]):
        self.store, self.keys = store, list(keys)
        self.md5, self.sha256, self.bytes = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
        self._current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, fewer only at the end of the last object (a multipart upload
        reading a part's worth gets the whole part)."""
        if size is None or size < 0:
            return self.readall()
        out = bytearray()
        while len(out) < size:
            if self._current is None:
                if not self.keys:
                    break
                self._current = self.store.open(self.keys.pop(0))
            data = self._current.read(size - len(out))
            if not data:
                self._current.close()
                self._current = None
            out += data
        self.md5.update(out)
        self.sha256.update(out)
        self.bytes += len(out)
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def chunks(self) -> Iterator[bytes]:
        """What is left, chunk by chunk."""
        while chunk := self.read(CHUNK):
            yield chunk

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()

    def result(self) -> PutResult:
        return PutResult(self.bytes, self.sha256.hexdigest())


class LocalStore:
    """A folder on disk. Writes go to a temp file and are renamed into place."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key escapes the store: {key!r}")
        return path

    def _refuse_write_once(self, path: Path) -> None:
        if path.is_file() and not path.stat().st_mode & stat.S_IWUSR:
            raise WriteOnceViolation(f"{path.relative_to(self.root).as_posix()} is write-once")

    def put_stream(self, key: str, stream: Readable, max_bytes: int | None = None) -> PutResult:
        path = self._path(key)
        self._refuse_write_once(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                result = _copy_hashing(stream, out, max_bytes)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return result

    def put_once(self, key: str, data: bytes) -> None:
        """Written read-only beside the target, then hard-linked into place (the link fails
        if the key exists: never a replace)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)
            os.link(tmp, path)
        except FileExistsError:
            raise WriteOnceViolation(f"{key} exists (write-once)") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def compose(self, key: str, sources: list[str]) -> PutResult:
        """Written as :meth:`put_stream` writes (a temp file renamed into place)."""
        with ConcatReader(self, sources) as reader:
            return self.put_stream(key, reader)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self._path(key).open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._refuse_write_once(path)
        path.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix``; nothing at all if one of them is write-once."""
        path = self._path(prefix)
        if path.is_dir():
            for key in self.list(prefix):
                self._refuse_write_once(self._path(key))
            shutil.rmtree(path)
        else:
            self.delete(prefix)

    def removed(self, prefix: str) -> list[str]:
        return []

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".upload-")
        )

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def total_bytes(self, prefix: str) -> int:
        return sum(self.size(key) for key in self.list(prefix))

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        return None

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"object store folder {self.root} is not writable")


class S3Store:
    """Any S3-compatible store through boto3 (multipart uploads for large streams)."""

    def __init__(self, bucket: str, prefix: str, settings: Settings):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retention_days = settings.audit_anchor_retention_days
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4"),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_stream(self, key: str, stream: Readable, max_bytes: int | None = None) -> PutResult:
        # Spool to a bounded temp file first so the size limit is enforced before
        # anything becomes visible in the bucket; upload_fileobj then streams it.
        with tempfile.SpooledTemporaryFile(max_size=8 * CHUNK) as spool:
            result = _copy_hashing(stream, spool, max_bytes)
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, self._key(key))
        return result

    def put_once(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        lock: dict[str, object] = {}
        if self.retention_days > 0:
            until = datetime.now(UTC) + timedelta(days=self.retention_days)
            lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*", **lock)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise WriteOnceViolation(f"{key} exists (write-once)") from None
            raise

    def compose(self, key: str, sources: list[str]) -> PutResult:
        """boto3's managed upload of the key (an S3 multipart upload above 8 MB), its parts
        read from the sources in turn as the upload goes: nothing is spooled (the caller
        knows the size already, so there is no limit to enforce first)."""
        with ConcatReader(self, sources) as reader:
            self.client.upload_fileobj(reader, self.bucket, self._key(key))
            return reader.result()

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def open(self, key: str) -> BinaryIO:
        body: BinaryIO = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self._delete_versions(self._key(key), exact=True)

    def delete_prefix(self, prefix: str) -> None:
        self._delete_versions(self._key(prefix), exact=False)

    def _delete_versions(self, full_key: str, *, exact: bool) -> None:
        """Delete every version and delete marker of the key (or of every key under the
        prefix): on a versioned bucket (Object Lock makes one) a plain delete only hides the
        data under a marker. Unversioned buckets list each object once (version ``null``).
        Raises ``OSError`` naming the first object the store kept (a locked version)."""
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_key):
            found = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]} for v in found if not exact or v["Key"] == full_key
            ]
            if not doomed:
                continue
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": doomed, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"S3 kept {first.get('Key')}: {first.get('Code')} {first.get('Message')}")

    def removed(self, prefix: str) -> list[str]:
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(m["Key"][strip:] for m in page.get("DeleteMarkers", []) if m["IsLatest"])
        return sorted(keys)

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def size(self, key: str) -> int:
        length: int = self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        return length

    def total_bytes(self, prefix: str) -> int:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        return sum(int(obj["Size"]) for page in pages for obj in page.get("Contents", []))

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )
        return url

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def upload_dir(store: ObjectStore, local_dir: Path, prefix: str) -> list[str]:
    """Upload every file under ``local_dir`` to ``prefix/<relative path>``."""
    keys = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(local_dir).as_posix()}"
        with path.open("rb") as f:
            store.put_stream(key, f)
        keys.append(key)
    return keys


def download_dir(store: ObjectStore, prefix: str, local_dir: Path) -> Path:
    """Download every object under ``prefix`` into ``local_dir`` (mirroring paths)."""
    prefix = prefix.rstrip("/") + "/"
    for key in store.list(prefix):
        dest = local_dir / key[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            for chunk in store.iter_chunks(key):
                out.write(chunk)
    return local_dir


def make_store(url: str, settings: Settings | None = None) -> ObjectStore:
    settings = settings or get_settings()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path, settings)
    raise ValueError(f"unsupported storage URL {url!r} (use file:///path or s3://bucket/prefix)")


@lru_cache(maxsize=8)
def _cached_store(url: str, endpoint: str | None, region: str) -> ObjectStore:
    return make_store(url)


def get_store() -> ObjectStore:
    """The process's store for the configured URL (one boto3 client, reused)."""
    settings = get_settings()
    return _cached_store(settings.storage, settings.s3_endpoint_url, settings.s3_region)
