"""``/v1/admin``: organizations and keys, managed with an admin-scoped key; all audited."""

from __future__ import annotations

import secrets

import pytest

from tests.api.helpers import GOOD, ORG_PREFIX, audit_actions, auth


@pytest.fixture(scope="module")
def admin(new_tenant):
    return new_tenant("admin")


def test_organization_and_key_lifecycle(http, admin, db, sdk):
    name = ORG_PREFIX + "admin-" + secrets.token_hex(3)
    r = http.post("/v1/admin/organizations", headers=auth(admin), json={"name": name, "max_concurrent_jobs": 2})
    assert r.status_code == 200, r.text
    org = r.json()
    assert org["object"] == "organization"
    assert org["name"] == name
    assert org["id"].startswith("org-")
    assert org["max_concurrent_jobs"] == 2
    assert org["max_storage_bytes"] is None
    assert audit_actions(db, org["id"]) == ["org.create", "org.update"]

    listed = http.get("/v1/admin/organizations", headers=auth(admin), params={"limit": 1000}).json()
    assert org["id"] in {o["id"] for o in listed["data"]}
    assert http.get(f"/v1/admin/organizations/{org['id']}", headers=auth(admin)).json() == org

    r = http.patch(f"/v1/admin/organizations/{org['id']}", headers=auth(admin), json={"max_storage_bytes": 10_000})
    assert r.json()["max_storage_bytes"] == 10_000
    assert r.json()["max_concurrent_jobs"] == 2
    assert audit_actions(db, org["id"]) == ["org.create", "org.update", "org.update"]

    r = http.post(f"/v1/admin/organizations/{org['id']}/api_keys", headers=auth(admin), json={"name": "ci"})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["object"] == "api_key"
    assert created["scope"] == "customer"
    assert created["name"] == "ci"
    assert created["key"].startswith("gt-")
    assert created["key"].startswith(created["prefix"])
    assert audit_actions(db, created["id"]) == ["key.create"]

    # the new key works, in its organization, with its limits
    client = sdk(created["key"])
    f = client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    assert f.status == "processed"
    keys = http.get(f"/v1/admin/organizations/{org['id']}/api_keys", headers=auth(admin)).json()["data"]
    assert [k["id"] for k in keys] == [created["id"]]
    assert "key" not in keys[0]  # the secret is shown once
    assert "key_hash" not in keys[0]
    assert keys[0]["last_used_at"] is not None

    revoke = f"/v1/admin/organizations/{org['id']}/api_keys/{created['id']}/revoke"
    r = http.post(revoke, headers=auth(admin))
    assert r.status_code == 200
    assert r.json()["revoked_at"] is not None
    again = http.post(revoke, headers=auth(admin))
    assert again.status_code == 200
    assert again.json()["revoked_at"] == r.json()["revoked_at"]
    assert audit_actions(db, created["id"]) == ["key.create", "key.revoke"]
    assert http.get("/v1/files", headers=auth(created["key"])).status_code == 401


def test_admin_errors(http, admin, tenant, new_tenant):
    r = http.post("/v1/admin/organizations", headers=auth(admin), json={"name": tenant.name})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "org_exists"
    r = http.post("/v1/admin/organizations", headers=auth(admin), json={"name": ""})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "name"
    for method, path in [
        ("GET", "/v1/admin/organizations/org-missing"),
        ("PATCH", "/v1/admin/organizations/org-missing"),
        ("GET", "/v1/admin/organizations/org-missing/api_keys"),
        ("POST", "/v1/admin/organizations/org-missing/api_keys"),
        ("POST", f"/v1/admin/organizations/{tenant.org_id}/api_keys/key-missing/revoke"),
    ]:
        r = http.request(method, path, headers=auth(admin), json={})
        assert r.status_code == 404, (method, path, r.text)
    # a key is revoked through its own organization only
    other = new_tenant()
    r = http.post(f"/v1/admin/organizations/{tenant.org_id}/api_keys/{other.key_id}/revoke", headers=auth(admin))
    assert r.status_code == 404
    r = http.post(f"/v1/admin/organizations/{tenant.org_id}/api_keys", headers=auth(admin), json={"scope": "root"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "scope"
