"""A cap on request bodies, applied before routing, parsing and authentication.

:class:`BodyLimitMiddleware` is pure ASGI: a request whose ``Content-Length`` is over
``GUARDTUNE_MAX_BODY_BYTES`` is answered 413 without its body being read (the server
discards what the client still sends), and a body of unknown length (chunked) is counted
as it arrives: the chunk that passes the limit raises :class:`~core.errors.PayloadTooLarge`
(413) to whatever was reading it, so no more than the limit is ever buffered. File uploads
and upload parts (``exempt``) stream under their own, larger limits (``GUARDTUNE_MAX_FILE_BYTES``,
``GUARDTUNE_MAX_UPLOAD_BYTES``, :mod:`api.files.uploads`)."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than this server accepts ({limit} bytes).",
        code="request_too_large",
        headers={"x-should-retry": "false"},
    )


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None when absent or not a number."""
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.isdigit() else None


class BodyLimitMiddleware:
    """413 (OpenAI-shaped) for a body over ``max_bytes`` on any route but the ``exempt`` ones:
    patterns that match the whole ``"<METHOD> <path>"``."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[re.Pattern[str], ...]):
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    def _exempt(self, scope: Scope) -> bool:
        route = f"{scope['method']} {scope['path']}"
        return any(pattern.fullmatch(route) for pattern in self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and started:
                    return {"type": "http.disconnect"}  # a stream watching for disconnects: it ends
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except PayloadTooLarge:  # raised by counted_receive where no exception handler caught it
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = too_large(self.max_bytes)
        await JSONResponse(error.to_dict(), status_code=error.status_code, headers=error.headers)(scope, receive, send)
