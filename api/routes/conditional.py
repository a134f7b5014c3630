"""Conditional GET: an ``ETag`` over the exact response body, ``304`` on ``If-None-Match``.

Pollers (the dashboard) send back the ETag they got; while nothing changed they get an
empty 304. The tag is a hash of the body, so it changes exactly when the body does.
Authorization is checked before this runs, so a 304 never reveals another org's data."""

from __future__ import annotations

import hashlib
import json

from fastapi import Request, Response
from pydantic import BaseModel

NOT_MODIFIED = {304: {"description": "Not Modified: the `If-None-Match` ETag is still current"}}


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def conditional_json(request: Request, payload: BaseModel) -> Response:
    body = json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False).encode()
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
