"""The route class of every API route: what happens before FastAPI reads the body.

FastAPI reads and parses a route's JSON body before it resolves any dependency, so a
stranger's body would be parsed before the 401. :class:`GuardedRoute` runs first, in
this order:

1. the path and query parameters are checked (:func:`api.input_guard.refuse_unstorable_params`);
2. a route that depends on :func:`api.deps.authenticate` identifies its caller
   (:func:`api.deps.identify`): without a valid key the answer is 401 and the body is
   never read;
3. a JSON body is read (bounded by :class:`api.bodylimit.BodyLimitMiddleware`), parsed
   once and checked (:func:`api.input_guard.refuse_unstorable_body`); FastAPI then
   validates that same parse (Starlette's request caches it).
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.deps import authenticate, identify
from api.input_guard import refuse_unstorable_body, refuse_unstorable_params
from core.settings import get_settings


def depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    """Whether ``call`` is among the dependencies of ``dependant``, at any depth."""
    return any(d.call is call or depends_on(d, call) for d in dependant.dependencies)


def is_json(request: Request) -> bool:
    """Whether the request declares a JSON body (``application/json`` or ``application/*+json``)."""
    declared = request.headers.get("content-type")
    if not declared:
        return False
    message = email.message.Message()
    message["content-type"] = declared
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def parse_json_once(request: Request) -> None:
    """Parse the JSON body (cached on ``request`` for FastAPI) and check what it holds;
    invalid JSON is FastAPI's own ``json_invalid`` validation error."""
    if not is_json(request) or not await request.body():
        return
    try:
        parsed = await request.json()
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "ctx": {"error": exc.msg}}]
        ) from None
    except (ValueError, RecursionError) as exc:  # not UTF-8/16/32 text, or nested deeper than the parser goes
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "the body is not Unicode text"
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error", "ctx": {"error": reason}}]
        ) from None
    refuse_unstorable_body(parsed)


class GuardedRoute(APIRoute):
    """An :class:`APIRoute` that checks parameters, authenticates and parses its JSON body
    once, in that order, before FastAPI's own handling (see the module's docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        needs_caller = depends_on(self.dependant, authenticate)
        json_body = self.body_field is not None and not isinstance(self.body_field.field_info, params.Form)

        async def guarded(request: Request) -> Response:
            refuse_unstorable_params(request)
            if needs_caller:
                request.state.caller = await identify(request, get_settings())
            if json_body:
                await parse_json_once(request)
            return await handle(request)

        return guarded
