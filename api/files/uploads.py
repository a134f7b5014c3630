"""Receive a multipart upload as a stream, stopping at the size limit.

Starlette's form parser spools a whole upload before the handler runs; this one reads
the request body chunk by chunk, checks the file part's name and type as soon as its
headers arrive, counts its bytes as they arrive and gives up (413) the moment the limit
is passed. The file's bytes go to a temporary file (in memory up to 1 MiB, then on disk),
never into one buffer; nothing reaches the object store or the database from here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from api.input_guard import unstorable
from core.errors import GuardtuneError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from core.quoting import clip, quoted

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

SPOOL_MEMORY = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file's bytes
MAX_FIELD_BYTES = 64 * 1024
DRAIN_LIMIT = 16 * 1024 * 1024  # after a refusal, read at most this much more before answering

JSONL_EXTENSIONS = (".jsonl",)
# What clients send for a .jsonl part: httpx and most tools fall back to octet-stream.
JSONL_CONTENT_TYPES = frozenset(
    {
        "",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/json-lines",
        "application/x-jsonlines",
        "application/ndjson",
        "application/x-ndjson",
        "application/json",
        "application/octet-stream",
        "text/jsonl",
        "text/plain",
    }
)


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    spool: IO[bytes] | None = None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


Accept = Callable[[str, str | None], None]
"""Checks a file part's name and declared content type; raises to refuse it."""


def _too_large(limit: int, field: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than the upload limit of {limit} bytes.",
        code="file_too_large",
        param=field,
        headers={"x-should-retry": "false"},
    )


def check_jsonl(filename: str, content_type: str | None, param: str = "file") -> None:
    """415 unless the part looks like a JSONL file (by name and declared type)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not filename.lower().endswith(JSONL_EXTENSIONS) or media not in JSONL_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Fine-tuning files must be JSONL: got {quoted(filename)} ({media or 'no content type'}). "
            "Upload a .jsonl file with one JSON example per line.",
            code="unsupported_file_type",
            param=param,
        )


class _Receiver:
    def __init__(self, max_bytes: int, file_field: str, accept: Accept | None, spool_dir: str | None):
        self.max_bytes = max_bytes
        self.file_field = file_field
        self.accept = accept
        self.spool_dir = spool_dir
        self.upload = Upload()
        self._headers: list[tuple[bytes, bytes]] = []
        self._hname = b""
        self._hvalue = b""
        self._name: str | None = None
        self._file: IO[bytes] | None = None  # the spool of the current part, if it is the file
        self._value = bytearray()
        self._files = 0

    # python-multipart callbacks -----------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers, self._name, self._file = [], None, None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers.append((self._hname.lower(), self._hvalue))
        self._hname, self._hvalue = b"", b""

    def on_headers_finished(self) -> None:
        headers = dict(self._headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidRequest("A multipart part has no name.", code="invalid_multipart")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            return
        if self._name != self.file_field:
            raise InvalidRequest(
                f"Unexpected file part {quoted(self._name)}; send the file as {quoted(self.file_field)}.",
                param=self.file_field,
            )
        self._files += 1
        if self._files > 1:
            raise InvalidRequest("Send exactly one file per upload.", code="invalid_multipart", param=self.file_field)
        filename = os.path.basename(options[b"filename"].decode("utf-8", "replace").replace("\\", "/"))
        if why := unstorable(filename):
            raise InvalidRequest(f"The file name {why}.", code="invalid_value", param=self.file_field)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if self.accept is not None:
            self.accept(filename, content_type)
        self.upload.filename = filename[:512]
        self.upload.content_type = content_type or None
        self.upload.spool = self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=self.spool_dir)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._file is not None:
            self.upload.size += n
            if self.upload.size > self.max_bytes:
                raise _too_large(self.max_bytes, self.file_field)
            self._file.write(data[start:end])
        else:
            if len(self._value) + n > MAX_FIELD_BYTES:
                raise InvalidRequest(
                    f"The form field {quoted(self._name)} is too long.", param=self._name and clip(self._name)
                )
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._file is None and self._name is not None:
            value = self._value.decode("utf-8", "replace")
            if why := unstorable(value) or unstorable(self._name):
                raise InvalidRequest(
                    f"The form field {quoted(self._name)} {why}.", code="invalid_value", param=clip(self._name)
                )
            self.upload.fields[self._name] = value

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read (and drop) what the client is still sending, so it gets to read our answer."""
    drained = 0
    try:
        async for chunk in stream:
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                return
    except Exception:  # the client went away: nothing left to drain
        return


async def receive_upload(
    request: Request,
    *,
    max_bytes: int,
    file_field: str = "file",
    accept: Accept | None = check_jsonl,
    spool_dir: str | None = None,
) -> Upload:
    """Parse the multipart body of ``request``: one file part named ``file_field`` (its name
    and type checked by ``accept``: JSONL by default; None takes any), at most ``max_bytes``
    of it, and form fields. Raise a :class:`GuardtuneError` on a bad upload."""
    media, params = parse_options_header(request.headers.get("content-type", ""))
    if media != b"multipart/form-data":
        raise UnsupportedMediaType(
            "Upload files as multipart/form-data with the fields 'file' and 'purpose'.",
            code="unsupported_media_type",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("The multipart body has no boundary.", code="invalid_multipart")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + MULTIPART_SLACK:
        raise _too_large(max_bytes, file_field)  # refused before a byte of the body is read

    receiver = _Receiver(max_bytes, file_field, accept, spool_dir)
    parser = MultipartParser(boundary, receiver.callbacks())
    stream = request.stream()
    try:
        async for chunk in stream:
            parser.write(chunk)
        if parser.state != MultipartState.END:
            # The body stopped before the closing boundary: a Content-Length shorter than
            # what was sent, or a sender that gave up. Its file is not the client's file.
            raise InvalidRequest(
                "The multipart body ended before its closing boundary: the upload is incomplete. "
                "Nothing was stored; send the whole file again.",
                code="incomplete_upload",
                param=file_field,
            )
        parser.finalize()
    except GuardtuneError:
        receiver.upload.close()
        await _drain(stream)
        raise
    except Exception as exc:  # malformed multipart from the client
        receiver.upload.close()
        raise InvalidRequest(f"The multipart body could not be parsed: {exc}", code="invalid_multipart") from None
    upload = receiver.upload
    if upload.spool is None:
        raise InvalidRequest(
            f"The upload has no file: send it in the {quoted(file_field)} field.", code="missing_file", param=file_field
        )
    upload.spool.seek(0)
    return upload
