"""Hostile input on the real server (uvicorn, Postgres, S3): every refusal is a 4xx with
OpenAI's error object naming what was wrong, and nothing is stored. Covers NUL characters
and lone surrogates anywhere, non-finite numbers, pathologically nested JSONL lines,
cut-short multipart bodies, oversized headers, and what ``/readyz`` tells strangers."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import File
from core.quoting import QUOTE_CHARS
from tests.api.helpers import BASE_MODEL, GOOD, auth, chat, jsonl

MAX_HEADER = 16 * 1024
BOUNDARY = "gt-test-boundary"
# Through uvicorn's request parsing too: the module's live server is up for the raw requests anyway.
pytestmark = pytest.mark.transport("asgi", "uvicorn")
API_ENV = {  # read by the ``live_api`` fixture and the in-process app
    "GUARDTUNE_MAX_HEADER_BYTES": str(MAX_HEADER),
    "GUARDTUNE_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens there: /readyz fails
}


def refused(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param, error
    return error


@pytest.fixture(scope="module")
def training_file(http, tenant) -> str:
    r = http.post("/v1/files", headers=auth(tenant), files={"file": ("t.jsonl", GOOD)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processed", r.text
    return r.json()["id"]


# -- NUL characters (Postgres text cannot hold them) -------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00x", "fine_tuning_job_id"),
        ("POST", "/v1/fine_tuning/jobs/ftjob-%00x/cancel", "fine_tuning_job_id"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00x/events", "fine_tuning_job_id"),
        ("GET", "/v1/files/file-%00", "file_id"),
        ("DELETE", "/v1/files/file-%00", "file_id"),
        ("GET", "/v1/fine_tuning/jobs?after=ftjob-%00", "after"),
        ("GET", "/v1/files?purpose=fine%00tune", "purpose"),
        ("GET", "/v1/models/m%00", "model"),
    ],
)
def test_nul_in_path_or_query_is_400_naming_it(http, tenant, unchanged, method, path, param):
    with unchanged(tenant):
        r = http.request(method, path, headers=auth(tenant))
    error = refused(r, 400, param)
    assert error["code"] == "invalid_value"
    assert "NUL" in error["message"]


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("training_file", "file-\u0000", "training_file"),
        ("model", "smollm2\u0000", "model"),
        ("metadata", {"team": "a\u0000b"}, "metadata.team"),
        ("metadata", {"te\u0000am": "x"}, "metadata"),
        ("metadata", {"team": "\ud800"}, "metadata.team"),  # a lone surrogate: no UTF-8 for it
    ],
)
def test_nul_or_surrogate_in_a_body_string_is_400_naming_it(
    http, tenant, unchanged, training_file, field, value, param
):
    body = {"model": BASE_MODEL, "training_file": training_file, field: value}
    with unchanged(tenant):
        r = http.post(
            "/v1/fine_tuning/jobs",
            headers={**auth(tenant), "content-type": "application/json"},
            content=json.dumps(body),
        )
    refused(r, 400, param)


def test_nul_in_an_organization_name_is_400(http, new_tenant):
    admin = new_tenant("admin")
    r = http.post("/v1/admin/organizations", headers=auth(admin), json={"name": "evil\u0000org"})
    refused(r, 400, "name")
    assert http.get("/v1/admin/organizations", params={"after": "org-\u0000"}, headers=auth(admin)).status_code == 400


def test_nul_in_an_upload_filename_or_field_is_400_and_nothing_stored(http, tenant, unchanged):
    headers = {**auth(tenant), "content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    with unchanged(tenant):  # raw bodies: clients percent-encode a NUL in a filename
        r = http.post("/v1/files", headers=headers, content=multipart(filename=b"t\x00.jsonl"))
        refused(r, 400, "file")
        r = http.post("/v1/files", headers=headers, content=multipart(purpose=b"fine\x00tune"))
        refused(r, 400, "purpose")


# -- numbers no integer can be ---------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("name", ["n_epochs", "batch_size"])
def test_non_finite_hyperparameter_is_400_naming_it(http, tenant, unchanged, training_file, raw, name):
    body = f'{{"model": "{BASE_MODEL}", "training_file": "{training_file}", "hyperparameters": {{"{name}": {raw}}}}}'
    with unchanged(tenant):
        r = http.post(
            "/v1/fine_tuning/jobs", headers={**auth(tenant), "content-type": "application/json"}, content=body
        )
    error = refused(r, 400, f"hyperparameters.{name}")
    assert "finite" in error["message"]


def test_an_integer_over_its_columns_range_is_400_naming_it(http, new_tenant):
    admin = new_tenant("admin")
    for field, value in (("max_concurrent_jobs", 2**31), ("max_storage_bytes", 2**63)):
        r = http.post("/v1/admin/organizations", headers=auth(admin), json={"name": f"big-{field}", field: value})
        refused(r, 400, field)


# -- JSONL lines the parser cannot nest -------------------------------------------------------------
def test_deeply_nested_jsonl_line_is_a_validation_error_with_its_line_number(http, tenant):
    nested = "[" * 1000 + "]" * 1000  # 2 KB
    deep_content = '{"messages": [{"role": "user", "content": ' + nested + '}, {"role": "assistant", "content": "x"}]}'
    data = jsonl(chat(), nested, chat(), deep_content)
    r = http.post(
        "/v1/files", headers=auth(tenant), files={"file": ("deep.jsonl", data)}, data={"purpose": "fine-tune"}
    )
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["status"] == "error"
    assert "line 2: Invalid JSON: the value is nested too deeply." in f["status_details"]
    assert "line 4: Invalid JSON: the value is nested too deeply." in f["status_details"]


# -- long customer strings in errors -------------------------------------------------------------------
LONG = 100_000  # characters of one customer string; an error quotes at most QUOTE_CHARS of it


def test_a_long_role_is_quoted_short_in_the_answer_and_the_database(http, tenant, db):
    line = {"messages": [{"role": "r" * LONG, "content": "x"}, {"role": "assistant", "content": "y"}]}
    r = http.post(
        "/v1/files",
        headers=auth(tenant),
        files={"file": ("roles.jsonl", jsonl(*[line] * 10))},
        data={"purpose": "fine-tune"},
    )
    assert r.status_code == 200, r.text[:500]
    details = r.json()["status_details"]
    assert f"({LONG} characters)" in details
    assert len(details) < 10 * (QUOTE_CHARS + 200), len(details)
    with Session(db) as session:
        stored = session.scalar(select(File.status_details).where(File.id == r.json()["id"]))
    assert stored == details


def test_a_long_key_is_quoted_short_in_a_validation_error(http, tenant, training_file):
    key = "k" * LONG
    r = http.post(
        "/v1/fine_tuning/jobs",
        headers=auth(tenant),
        json={"model": BASE_MODEL, "training_file": training_file, "metadata": {key: "a\u0000b"}},
    )
    assert r.status_code == 400
    assert len(r.content) < 2 * QUOTE_CHARS + 500, len(r.content)


# -- cut-short uploads --------------------------------------------------------------------------------


def multipart(*, closing: bool = True, filename: bytes = b"cut.jsonl", purpose: bytes = b"fine-tune") -> bytes:
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'.encode()
        + purpose
        + b"\r\n"
        + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
        + filename
        + b'"\r\nContent-Type: application/jsonl\r\n\r\n'
        + GOOD
    )
    return body + (f"\r\n--{BOUNDARY}--\r\n".encode() if closing else b"")


def raw_exchange(base_url: str, head: bytes, body: bytes) -> bytes:
    """Send bytes as they are (no client fixes the framing) and read the first answer."""
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def post_raw(live_api, tenant, body: bytes, content_length: int) -> tuple[int, dict]:
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {tenant.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {content_length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = raw_exchange(live_api.base_url, head, body)
    status = int(answer.split(b" ", 2)[1])
    payload = answer.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(payload[: payload.rindex(b"}") + 1])


def test_whole_raw_upload_is_stored(live_api, tenant):
    """The raw request below is well formed: the refusals that follow are about the cut."""
    body = multipart()
    status, payload = post_raw(live_api, tenant, body, len(body))
    assert status == 200, payload
    assert payload["status"] == "processed", payload


def test_content_length_shorter_than_the_body_is_400_and_nothing_stored(live_api, tenant, unchanged):
    body = multipart()
    with unchanged(tenant):
        status, payload = post_raw(live_api, tenant, body, len(body) - 40)  # ends inside the file's bytes
    assert status == 400, payload
    assert payload["error"]["code"] == "incomplete_upload"
    assert payload["error"]["param"] == "file"


def test_missing_closing_boundary_is_400_and_nothing_stored(live_api, tenant, unchanged):
    body = multipart(closing=False)
    with unchanged(tenant):
        status, payload = post_raw(live_api, tenant, body, len(body))
    assert status == 400, payload
    assert payload["error"]["code"] == "incomplete_upload"


# -- header size ----------------------------------------------------------------------------------------
def test_header_over_the_limit_is_431_before_it_is_read(live_api):
    """A 100 MB header: more than socket buffers hold, so if the server kept reading it the
    client would send it all; it answers 431 after about MAX_HEADER bytes and closes after
    discarding at most ``api.server.LINGER_BYTES`` more."""
    total, chunk = 100 * 1024 * 1024, b"x" * 65536
    url = urlsplit(live_api.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
        sent = 0
        try:
            while sent < total:
                sent += s.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: expected once it has answered
        answer = b""
        try:
            while data := s.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_header_fields_too_large"
    assert sent < total, "the server read the whole oversized header"


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 8 * 1024 * 1024])
def test_an_http_client_sending_a_huge_header_reads_431(live_api, size):
    """A client that sends its whole request before reading (httpx, like most) gets the 431,
    not a reset connection: the server answers, then reads and discards what is still coming."""
    r = httpx.get(f"{live_api.base_url}/healthz", headers={"X-Big": "x" * size}, timeout=30)
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "request_header_fields_too_large"


@pytest.mark.transport("uvicorn")  # the limit is uvicorn's (the closest marker wins)
def test_header_under_the_limit_is_served(http):
    r = http.get("/healthz", headers={"X-Big": "x" * (MAX_HEADER // 2)})
    assert r.status_code == 200


# -- readiness -----------------------------------------------------------------------------------------
def test_readyz_names_the_failing_component_without_its_address(http, deployment_env):
    r = http.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["storage"] == "ok"
    assert checks["broker"].startswith("error: ")
    for secret in (
        "127.0.0.1",
        "redis://",
        ":1",
        urlsplit(deployment_env["GUARDTUNE_S3_ENDPOINT_URL"]).netloc,
        "postgres",
        "localhost",
    ):
        assert secret not in r.text, r.text
