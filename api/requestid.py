"""``x-request-id`` on every response, in the structured logs and in audit records.

A client-sent ``x-request-id`` is kept when it is sane (1–128 characters of
``A-Z a-z 0-9 . _ : - + = /``); otherwise the server makes one (``req_`` + 32 hex digits).
While the request runs the id is bound in structlog's context variables, so every log
line of the request and every audit record it writes (:mod:`core.audit.service`) carry it; one
``request`` log line per request records method, path, status and duration."""

from __future__ import annotations

import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logging import get_logger

HEADER = "x-request-id"
SCOPE_KEY = "guardtune.request_id"
SANE = re.compile(r"^[A-Za-z0-9._:+=/-]{1,128}$")

log = get_logger("api.request")


def accept_or_new(sent: str | None) -> str:
    """The client's id if sane, else a new one."""
    if sent is not None and SANE.match(sent):
        return sent
    return f"req_{secrets.token_hex(16)}"


def request_id_of(scope: Scope) -> str | None:
    """The id given to the request of ``scope`` (for handlers outside the middleware)."""
    return scope.get(SCOPE_KEY)


class RequestIdMiddleware:
    """Pure ASGI middleware (streaming responses pass through untouched)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER.encode()), None)
        request_id = scope[SCOPE_KEY] = accept_or_new(sent)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER.encode(), request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
