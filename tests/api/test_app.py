"""The app as a whole: its OpenAPI document and the rule that the API never imports torch."""

from __future__ import annotations

import subprocess
import sys

EXPECTED = {
    "/v1/files": {"get", "post"},
    "/v1/files/{file_id}": {"get", "delete"},
    "/v1/files/{file_id}/content": {"get"},
    "/v1/fine_tuning/jobs": {"get", "post"},
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}": {"get"},
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel": {"post"},
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events": {"get"},
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints": {"get"},
    "/v1/fine_tuning/jobs/{fine_tuning_job_id}/safety_report": {"get"},
    "/v1/models": {"get"},
    "/v1/models/{model}": {"get"},
    "/v1/models/{model}/adapter": {"get"},
    "/v1/admin/organizations": {"get", "post"},
    "/v1/admin/organizations/{org_id}": {"get", "patch"},
    "/v1/admin/organizations/{org_id}/api_keys": {"get", "post"},
    "/v1/admin/organizations/{org_id}/api_keys/{key_id}/revoke": {"post"},
}


def _ref(schema: dict) -> str:
    return schema.get("$ref", "").rsplit("/", 1)[-1]


def test_openapi_documents_every_endpoint_with_schemas(http):
    assert http.get("/docs").status_code == 200
    assert "swagger" in http.get("/docs").text.lower()
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    for path, methods in EXPECTED.items():
        assert path in paths, path
        assert set(paths[path]) >= methods, path
        for method in methods:
            op = paths[path][method]
            assert op.get("summary"), (path, method)
            assert "200" in op["responses"], (path, method)
            assert "401" in op["responses"], (path, method)
            assert _ref(op["responses"]["401"]["content"]["application/json"]["schema"]) == "ErrorResponse"
            assert op.get("security") == [{"ApiKey": []}], (path, method)
    schemas = spec["components"]["schemas"]
    job = schemas["FineTuningJob"]["properties"]
    for field in (
        "object",
        "created_at",
        "error",
        "fine_tuned_model",
        "finished_at",
        "hyperparameters",
        "model",
        "organization_id",
        "result_files",
        "seed",
        "status",
        "trained_tokens",
        "training_file",
        "validation_file",
        "estimated_finish",
        "integrations",
        "metadata",
        "method",
        "user_provided_suffix",
        "safety",
    ):
        assert field in job, field
    create = paths["/v1/fine_tuning/jobs"]["post"]
    assert _ref(create["requestBody"]["content"]["application/json"]["schema"]) == "JobCreate"
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])
    assert set(schemas["SafetyIn"]["properties"]) == {
        "mode",
        "estimator",
        "kl_weight",
        "constant_kl_weight",
        "risk_weighting",
        "max_flagged_fraction",
        "reference",
    }
    upload = paths["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(upload["required"]) == {"file", "purpose"}
    assert _ref(paths["/v1/files"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]) == "FileObject"
    # request-validation failures are documented as they are answered: 400, OpenAI's error object
    assert "HTTPValidationError" not in str(spec)
    assert _ref(create["responses"]["400"]["content"]["application/json"]["schema"]) == "ErrorResponse"
    events = paths["/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"]["get"]
    assert "304" in events["responses"]
    assert {p["name"] for p in events["parameters"]} >= {"after", "limit", "order"}


def test_the_api_never_imports_torch():
    code = (
        "import sys\n"
        "import api.app\n"
        "app = api.app.create_app()\n"
        "app.openapi()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'safety') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok", done.stderr


def test_docs_name_admin_keys_operator_keys(http):
    description = http.get("/openapi.json").json()["info"]["description"]
    assert "Admin-scoped keys are operator keys" in description
    assert "across all organizations" in description
