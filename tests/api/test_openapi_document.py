"""The OpenAPI document is a published contract: it changes only on purpose.

``tests/api/openapi.json`` is the document as the API answers it (``GET /openapi.json``),
written with ``json.dumps(spec, indent=2)``. A change to the wire shows here as a diff; when
the change is meant, regenerate the file with ``GUARDTUNE_WRITE_OPENAPI=1 python -m pytest
tests/api/test_openapi_document.py`` and commit it with the change."""

from __future__ import annotations

import json
import os
from pathlib import Path

from api.app import create_app

DOCUMENT = Path(__file__).with_name("openapi.json")


def test_the_openapi_document_is_the_recorded_one():
    answered = json.dumps(create_app().openapi(), indent=2) + "\n"
    if os.environ.get("GUARDTUNE_WRITE_OPENAPI") == "1":
        DOCUMENT.write_text(answered)
    recorded = DOCUMENT.read_text()
    assert answered == recorded, "the OpenAPI document changed: see this test's docstring"


def test_no_component_schema_is_unreachable():
    spec = create_app().openapi()
    referenced = set(json.dumps(spec).split('"#/components/schemas/')[1:])
    names = {part.split('"', 1)[0] for part in referenced}
    assert set(spec["components"]["schemas"]) <= names
