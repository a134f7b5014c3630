"""Refuse request values no column can hold, before any handler sees them.

Postgres cannot store a NUL character in text, UTF-8 has no lone surrogates (JSON's
``"\\ud800"``), and Python's JSON parser turns ``Infinity``, ``NaN`` and ``1e400`` into
floats that overflow every integer conversion. Each of these answers 400
``invalid_value`` naming the parameter (``fine_tuning_job_id``, ``after``,
``hyperparameters.n_epochs``, ``metadata.team``), whatever the route:
:class:`api.routing.GuardedRoute` checks the path and query parameters before anything
else and the JSON body right after parsing it (once: FastAPI validates that same parse).
Multipart uploads are checked as they stream (``api.files.uploads``)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request

from core.errors import InvalidRequest
from core.quoting import clip, quoted


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (it has a lone surrogate)"
    return None


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"The parameter {quoted(param)} {why}.", code="invalid_value", param=clip(param))


def _walk(value: Any, path: str) -> None:
    if isinstance(value, str):
        if why := unstorable(value):
            raise _refuse(path or "body", why)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _refuse(path or "body", "must be a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if why := unstorable(key):
                raise _refuse(path or "body", f"has a key that {why}")
            _walk(item, name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}.{i}" if path else str(i))


def refuse_unstorable_params(request: Request) -> None:
    """400 naming the first path or query parameter that cannot be stored."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (why := unstorable(value)):
            raise _refuse(name, why)
    for name, value in request.query_params.multi_items():
        if why := unstorable(name):
            raise _refuse("query", f"has a parameter name that {why}")
        if why := unstorable(value):
            raise _refuse(name, why)


def refuse_unstorable_body(parsed: Any) -> None:
    """400 naming the first value of a parsed JSON body that cannot be stored."""
    _walk(parsed, "")
