"""Conditional GET: an ``ETag`` on the response, ``304`` on a matching ``If-None-Match``.

Pollers (the dashboard) send back the ETag they got; while nothing changed they get an
empty 304. :func:`conditional_json` tags a built body by its hash; :func:`conditional`
takes a tag computed without the body (``api.etags.row_validator``) and builds the body
only when the tag does not match, so a poll that changes nothing costs two small queries.
Authorization is checked before this runs, so a 304 never reveals another org's data."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import Request, Response
from pydantic import BaseModel

from api.etags import etag_of

NOT_MODIFIED = {304: {"description": "Not Modified: the `If-None-Match` ETag is still current"}}


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


def _render(payload: BaseModel) -> bytes:
    return json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False).encode()


def _answer(request: Request, etag: str, body: Callable[[], bytes]) -> Response:
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body(), media_type="application/json", headers=headers)


def conditional_json(request: Request, payload: BaseModel) -> Response:
    """Tag the built ``payload`` by its bytes."""
    body = _render(payload)
    return _answer(request, etag_of(body), lambda: body)


def conditional(request: Request, etag: str, build: Callable[[], BaseModel]) -> Response:
    """Answer 304 if ``etag`` matches, else build the body (``etag`` must change whenever
    what ``build`` returns does)."""
    return _answer(request, etag, lambda: _render(build()))
