"""Limits before work: a request body over ``GUARDTUNE_MAX_BODY_BYTES`` is refused (413)
before it is parsed, and a request without a valid key is refused (401) before its body
is read at all: on the real server a 100 MB body leaves its memory where it was."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from core.quoting import QUOTE_CHARS
from tests.api.helpers import BASE_MODEL, GOOD, auth, chat, jsonl

MAX_BODY = 64 * 1024
HUGE = 100 * 1024 * 1024
CHUNK = 1024 * 1024
API_ENV = {"GUARDTUNE_MAX_BODY_BYTES": str(MAX_BODY)}  # read by ``live_api`` and the in-process app
pytestmark = pytest.mark.transport("asgi", "uvicorn")


def chat_body(size: int) -> bytes:
    """A chat request of about ``size`` bytes (one long user message)."""
    head = json.dumps({"model": BASE_MODEL, "messages": [{"role": "user", "content": ""}]}).encode()
    return head[:-3] + b"x" * max(0, size - len(head)) + head[-3:]


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


def test_a_body_over_the_limit_with_its_length_is_413(http, tenant):
    r = http.post(
        "/v1/chat/completions",
        headers={**auth(tenant), "content-type": "application/json"},
        content=chat_body(MAX_BODY + 1),
    )
    refused(r, 413, "request_too_large")
    assert str(MAX_BODY) in r.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_is_413(http, tenant):
    body = chat_body(MAX_BODY * 2)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    r = http.post(
        "/v1/fine_tuning/jobs", headers={**auth(tenant), "content-type": "application/json"}, content=chunks()
    )
    assert "content-length" not in r.request.headers
    refused(r, 413, "request_too_large")


def test_an_upload_over_the_body_limit_is_still_accepted(http, tenant):
    """File uploads have their own, larger limit (``GUARDTUNE_MAX_FILE_BYTES``)."""
    data = GOOD + jsonl(*[chat("q" * 500, "a" * 500)] * (2 * MAX_BODY // 1000))
    assert len(data) > MAX_BODY
    r = http.post("/v1/files", headers=auth(tenant), files={"file": ("big.jsonl", data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processed"


def test_an_upload_part_over_the_body_limit_is_still_accepted(sdk, tenant):
    """So are the parts of ``/v1/uploads`` (64 MB each at most)."""
    data = GOOD + jsonl(*[chat("q" * 500, "a" * 500)] * (2 * MAX_BODY // 1000))
    done = sdk(tenant).uploads.upload_file_chunked(
        file=data, filename="big.jsonl", bytes=len(data), mime_type="application/jsonl", purpose="fine-tune",
        part_size=len(data),
    )  # fmt: skip
    assert (done.status, done.file.status, done.file.bytes) == ("completed", "processed", len(data))


@pytest.mark.parametrize("key", [None, "sk-not-a-key"])
def test_invalid_json_without_a_valid_key_is_401(http, key):
    headers = {"content-type": "application/json", **(auth(key) if key else {})}
    r = http.post("/v1/chat/completions", headers=headers, content=b'{"model": ')
    assert r.status_code == 401, r.text


def json_operations(http) -> list[tuple[str, str]]:
    """``(method, path)`` of every authenticated operation that takes a JSON body."""
    paths = http.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path.replace("{org_id}", "org-x"))
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {}) and operation.get("security")
    ]


def test_every_json_operation_answers_401_before_parsing_its_body(http):
    operations = json_operations(http)
    assert len(operations) >= 5
    for method, path in operations:
        r = http.request(method, path, headers={"content-type": "application/json"}, content=b"\x80not json")
        assert r.status_code == 401, (method, path, r.text)


def test_invalid_json_with_a_key_is_400_naming_the_position(http, tenant):
    r = http.post(
        "/v1/chat/completions", headers={**auth(tenant), "content-type": "application/json"}, content=b'{"model": '
    )
    refused(r, 400, "invalid_json")
    assert "at character 10" in r.json()["error"]["message"]


@pytest.mark.transport("asgi")
def test_the_json_body_is_parsed_once(http, tenant, monkeypatch):
    body = json.dumps({"model": BASE_MODEL, "training_file": "file-none"}).encode()
    parses = []
    real_loads = json.loads

    def counting_loads(text, *args, **kwargs):
        if text == body:
            parses.append(text)
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    r = http.post("/v1/fine_tuning/jobs", headers={**auth(tenant), "content-type": "application/json"}, content=body)
    assert r.status_code == 404, r.text  # the file does not exist: the body was parsed and validated
    assert len(parses) == 1


def test_a_long_model_name_is_quoted_short(http, tenant):
    r = http.post(
        "/v1/chat/completions",
        headers=auth(tenant),
        json={"model": "m" * 50_000, "messages": [{"role": "user", "content": "hi"}]},
    )
    refused(r, 404, "model_not_found")
    error = r.json()["error"]
    assert "(50000 characters)" in error["message"]
    assert len(error["message"]) < QUOTE_CHARS + 200


# -- 100 MB against the real server ---------------------------------------------------------------------
class HealthWatch:
    """Polls ``/healthz`` in a thread while a test runs; ``slowest`` is its longest answer."""

    def __init__(self, base_url: str):
        self.base_url, self.slowest, self.failures = base_url, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                if client.get("/healthz").status_code != 200:
                    self.failures += 1
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def huge_chunks() -> Iterator[bytes]:
    head = b'{"model": "' + BASE_MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
    yield head
    for _ in range(HUGE // CHUNK):
        yield b"x" * CHUNK
    yield b'"}]}'


@pytest.mark.parametrize(
    ("with_length", "key", "status"),
    [
        pytest.param(True, None, 413, id="length-no-key"),
        pytest.param(False, None, 401, id="chunked-no-key"),
        pytest.param(False, "tenant", 413, id="chunked-with-key"),
    ],
)
def test_a_100_mb_body_is_refused_quickly_with_memory_bounded(live_api, tenant, with_length, key, status):
    server = psutil.Process(live_api.process.pid)
    headers = {"content-type": "application/json", **(auth(tenant) if key else {})}
    if with_length:
        headers["content-length"] = str(sum(len(c) for c in huge_chunks()))
    before = server.memory_info().rss
    with HealthWatch(live_api.base_url) as health:
        started = time.perf_counter()
        r = httpx.post(f"{live_api.base_url}/v1/chat/completions", headers=headers, content=huge_chunks(), timeout=60)
        took = time.perf_counter() - started
    assert r.status_code == status, r.text
    assert took < 15, f"answered after {took:.1f}s"
    grown = server.memory_info().rss - before
    assert grown < 50 * 1024 * 1024, f"the server grew {grown / 2**20:.0f} MB"
    assert health.failures == 0
    assert health.slowest < 1.0, f"/healthz took {health.slowest:.2f}s"


@pytest.mark.parametrize("body", [b"\x80{}", b'{"a"\x00\x00', b"[" * 50_000], ids=["not-utf8", "utf32-cut", "deep"])
def test_a_body_json_cannot_read_is_400_invalid_json(http, tenant, body):
    r = http.post("/v1/fine_tuning/jobs", headers={**auth(tenant), "content-type": "application/json"}, content=body)
    refused(r, 400, "invalid_json")
