"""The OpenAPI document as the API really answers.

FastAPI documents a 422 ``HTTPValidationError`` on every endpoint with parameters; this
API answers request-validation failures with 400 and OpenAI's error object (see
``api.errors``), so those entries are replaced by the 400 ``ErrorResponse``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in spec.get("paths", {}).values():
            for op in operations.values():
                responses = op.get("responses", {})
                schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
                    responses.setdefault(
                        "400",
                        {"description": "Invalid request", "content": {"application/json": {"schema": ERROR_REF}}},
                    )
        schemas = spec.get("components", {}).get("schemas", {})
        text = str(spec.get("paths"))
        for name in ("HTTPValidationError", "ValidationError"):
            if f"/{name}'" not in text:
                schemas.pop(name, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
