"""The OpenAPI document as the API really answers.

FastAPI documents a 422 ``HTTPValidationError`` on every endpoint with parameters; this
API answers request-validation failures with 400 and OpenAI's error object (see
``api.errors``), so those entries are replaced by the 400 ``ErrorResponse``. Component
schemas that no path reaches are dropped: FastAPI lists every enum class a field is typed
with, also one the field documents inline (``core.vocab.AS_LITERAL``)."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
REF = re.compile(r'"#/components/schemas/([^"]+)"')


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
        for name in set(schemas) - reachable(spec.get("paths", {}), schemas):
            del schemas[name]
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def reachable(paths: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The names of the component schemas that ``paths`` refer to, directly or through other schemas."""
    found: set[str] = set()
    pending = REF.findall(json.dumps(paths))
    while pending:
        name = pending.pop()
        if name not in found and name in schemas:
            found.add(name)
            pending.extend(REF.findall(json.dumps(schemas[name])))
    return found
