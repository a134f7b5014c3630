"""The one error handler: every failure leaves as OpenAI's error object."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.requestid import HEADER, request_id_of
from core.errors import GuardtuneError
from core.logging import get_logger
from core.quoting import clip

log = get_logger(__name__)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def invalid_json_message(error: dict) -> str:
    """What is wrong with a body that is not JSON, and where (FastAPI's ``json_invalid``)."""
    loc = error.get("loc", ())
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    reason = (error.get("ctx") or {}).get("error") or "not valid JSON"
    where = f" at character {position}" if position is not None else ""
    return (
        f"We could not parse the JSON body of your request: {reason}{where}. "
        "Send a JSON object with 'Content-Type: application/json'."
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GuardtuneError)
    async def _guardtune(_: Request, exc: GuardtuneError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(invalid_json_message(first), "invalid_request_error", "invalid_json"), 400)
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = clip(".".join(loc)) or None  # a path may hold the customer's own keys
        message = clip(str(first["msg"]), 1000) + (f" (param: {param})" if param else "")
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_value", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        request_id = request_id_of(request.scope)  # this handler runs outside the request-id middleware
        return JSONResponse(
            error_body("The server had an error while processing your request.", "server_error"),
            500,
            headers={HEADER: request_id} if request_id else None,
        )
