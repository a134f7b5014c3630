"""Entity tags of response bodies.

Two kinds, both strong (equal tags mean byte-equal bodies):

* :func:`etag_of` hashes a body that was built;
* :func:`row_validator` hashes what a body is a function of (row versions, cursor
  parameters), so a conditional poll can be answered 304 without loading the rows or
  building the body. Its caller passes the tag of its response schemas
  (:func:`body_format`) as the first part: a deploy that changes how bodies are rendered
  changes the tags too."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def body_format(*schemas: type[BaseModel]) -> str:
    """The tag of how bodies of these response schemas are rendered: their JSON Schemas, in order."""
    return etag_of(json.dumps([schema.model_json_schema() for schema in schemas], sort_keys=True).encode())


def row_validator(body_format: str, *parts: object) -> str:
    """The tag of a body rendered as ``body_format`` (:func:`body_format`) from what ``parts`` name."""
    return etag_of("\x1f".join(str(p) for p in (body_format, *parts)).encode())
