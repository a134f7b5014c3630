"""Authentication on every endpoint, revoked keys, and organization isolation (404)."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.models import ApiKey, now
from tests.api.helpers import BASE_MODEL, GOOD, auth

CUSTOMER_ENDPOINTS = [
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/file-x"),
    ("DELETE", "/v1/files/file-x"),
    ("GET", "/v1/files/file-x/content"),
    ("POST", "/v1/fine_tuning/jobs"),
    ("GET", "/v1/fine_tuning/jobs"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-x"),
    ("POST", "/v1/fine_tuning/jobs/ftjob-x/cancel"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-x/events"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-x/checkpoints"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-x/safety_report"),
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{BASE_MODEL}"),
    ("GET", "/v1/models/ft:x:y::z/adapter"),
]
ADMIN_ENDPOINTS = [
    ("POST", "/v1/admin/organizations"),
    ("GET", "/v1/admin/organizations"),
    ("GET", "/v1/admin/organizations/org-x"),
    ("PATCH", "/v1/admin/organizations/org-x"),
    ("GET", "/v1/admin/organizations/org-x/api_keys"),
    ("POST", "/v1/admin/organizations/org-x/api_keys"),
    ("POST", "/v1/admin/organizations/org-x/api_keys/key-x/revoke"),
]


@pytest.mark.parametrize(("method", "path"), CUSTOMER_ENDPOINTS + ADMIN_ENDPOINTS)
def test_every_endpoint_needs_a_key(http, method, path):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        r = http.request(method, path, headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == {
            "error": {
                "message": "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                "type": "invalid_request_error",
                "param": None,
                "code": "missing_api_key",
            }
        }
    r = http.request(method, path, headers={"Authorization": "Bearer gt-not-a-real-key"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_admin_endpoints_refuse_customer_keys(http, tenant, method, path, unchanged):
    with unchanged(tenant):
        r = http.request(method, path, headers=auth(tenant), json={"name": "sneaky"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "insufficient_scope"


def test_sdk_sees_authentication_errors(sdk):
    with pytest.raises(openai.AuthenticationError) as err:
        sdk("gt-wrong").files.list()
    assert err.value.code == "invalid_api_key"


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_ttl(http, new_tenant, db, monkeypatch):
    """Revoked in the database (another process): cached here for GUARDTUNE_API_KEY_CACHE_S
    (default 5 s), refused once that has passed. (Through the admin API of this process it is
    refused at once: ``test_admin``; with the cache off, at the next request: ``test_key_cache``.)"""
    from api import keycache

    t = new_tenant()
    assert http.get("/v1/files", headers=auth(t)).status_code == 200
    with Session(db) as session, session.begin():
        session.execute(update(ApiKey).where(ApiKey.id == t.key_id).values(revoked_at=now()))
    assert http.get("/v1/files", headers=auth(t)).status_code == 200  # cached: within the TTL
    clock = keycache.time.monotonic
    monkeypatch.setattr(keycache.time, "monotonic", lambda: clock() + 5.0)
    r = http.get("/v1/files", headers=auth(t))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


@pytest.fixture(scope="module")
def owned(sdk, tenant):
    """A file and a job of ``tenant``."""
    client = sdk(tenant)
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
    return f, job


def test_another_organizations_ids_answer_404(http, owned, tenant, other_tenant, sdk, unchanged):
    f, job = owned
    intruder = auth(other_tenant)
    paths = [
        ("GET", f"/v1/files/{f.id}"),
        ("GET", f"/v1/files/{f.id}/content"),
        ("DELETE", f"/v1/files/{f.id}"),
        ("GET", f"/v1/fine_tuning/jobs/{job.id}"),
        ("POST", f"/v1/fine_tuning/jobs/{job.id}/cancel"),
        ("GET", f"/v1/fine_tuning/jobs/{job.id}/events"),
        ("GET", f"/v1/fine_tuning/jobs/{job.id}/checkpoints"),
        ("GET", f"/v1/fine_tuning/jobs/{job.id}/safety_report"),
    ]
    with unchanged(tenant), unchanged(other_tenant):
        for method, path in paths:
            r = http.request(method, path, headers=intruder)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
            # the same answer as for an id that does not exist at all
            missing = http.request(
                method, path.replace(f.id, "file-missing").replace(job.id, "ftjob-missing"), headers=intruder
            )
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == r.json()["error"]["code"]
        with pytest.raises(openai.NotFoundError) as err:
            sdk(other_tenant).fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id)
        assert err.value.code == "file_not_found"
        assert err.value.param == "training_file"
        assert f.id not in {x.id for x in sdk(other_tenant).files.list()}
        assert job.id not in {x.id for x in sdk(other_tenant).fine_tuning.jobs.list()}
        r = http.get("/v1/fine_tuning/jobs", headers=intruder, params={"after": job.id})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_cursor"
    # and the owner still sees everything as it was
    assert sdk(tenant).fine_tuning.jobs.retrieve(job.id).status == "validating_files"
    assert sdk(tenant).files.retrieve(f.id).id == f.id
