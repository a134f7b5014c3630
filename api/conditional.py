"""Conditional GET: an ``ETag`` on the response, ``304`` on a matching ``If-None-Match``.

Pollers (the dashboard) send back the ETag they got; while nothing changed they get an
empty 304. :func:`conditional_json` tags a built body by its hash; :func:`conditional`
takes a tag computed without the body (``core.etags.row_validator``) and builds the body
only when the tag does not match, so a poll that changes nothing costs one small query
(the key's is cached: ``api.keycache``). :func:`conditional_rows` also keeps the bodies it
built by their tag, so a plain poll of unchanged rows costs that one query too.
Authorization is checked before this runs, so a 304 never reveals another org's data."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel

from core.etags import etag_of

# Bodies by their row validator (strong: equal tags, byte-equal bodies); at most MAX_BODIES,
# starting over when full. Plain dict operations, safe from the endpoint threads.
_BODIES: dict[str, bytes] = {}
MAX_BODIES = 1024

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the `If-None-Match` ETag is still current"}
}


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


def _headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}


def not_modified(request: Request, etag: str) -> Response | None:
    """The 304 answer if the request's ``If-None-Match`` matches ``etag``, else None."""
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=_headers(etag))
    return None


def _answer(request: Request, etag: str, body: Callable[[], bytes]) -> Response:
    answer = not_modified(request, etag)
    return answer or Response(body(), media_type="application/json", headers=_headers(etag))


def conditional_json(request: Request, payload: BaseModel) -> Response:
    """Tag the built ``payload`` by its bytes."""
    body = _render(payload)
    return _answer(request, etag_of(body), lambda: body)


def conditional(request: Request, etag: str, build: Callable[[], BaseModel]) -> Response:
    """Answer 304 if ``etag`` matches, else build the body (``etag`` must change whenever
    what ``build`` returns does)."""
    return _answer(request, etag, lambda: _render(build()))


def conditional_rows(request: Request, etag: str, load: Callable[[], tuple[str, BaseModel]]) -> Response:
    """As :func:`conditional`, for a body that ``load`` builds with its tag, computed from the
    rows it was built of (``etag``, read before, may be older). A body is kept under the tag
    ``load`` gave it, so a poll whose rows have not changed since is answered without ``load``."""
    answer = not_modified(request, etag)
    if answer is not None:
        return answer
    body = _BODIES.get(etag)
    if body is None:
        etag, payload = load()
        body = _render(payload)
        if len(_BODIES) >= MAX_BODIES:
            _BODIES.clear()
        _BODIES[etag] = body
    return Response(body, media_type="application/json", headers=_headers(etag))
