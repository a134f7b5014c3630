"""Entity tags of response bodies.

Two kinds, both strong (equal tags mean byte-equal bodies):

* :func:`etag_of` hashes a body that was built;
* :func:`row_validator` hashes what a body is a function of (row versions, cursor
  parameters), so a conditional poll can be answered 304 without loading the rows or
  building the body. :data:`BODY_FORMAT` (the response schemas) is part of every such tag:
  a deploy that changes how bodies are rendered changes the tags too."""

from __future__ import annotations

import hashlib
import json

from api.jobs.schemas import FineTuningJob, JobEvent
from api.schemas import CursorPage


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


BODY_FORMAT = etag_of(
    json.dumps([FineTuningJob.model_json_schema(), CursorPage[JobEvent].model_json_schema()], sort_keys=True).encode()
)


def row_validator(*parts: object) -> str:
    return etag_of("\x1f".join(str(p) for p in (BODY_FORMAT, *parts)).encode())
