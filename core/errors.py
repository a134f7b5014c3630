"""One error hierarchy. The API renders each as OpenAI's error object:
``{"error": {"message", "type", "param", "code"}}`` with the class's status code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.ratelimit import Usage


class GuardtuneError(Exception):
    status_code = 500
    type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers  # extra response headers (e.g. ``x-should-retry: false``)

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(GuardtuneError):
    status_code = 400
    type = "invalid_request_error"


class AuthenticationError(GuardtuneError):
    status_code = 401
    type = "invalid_request_error"


class PermissionDenied(GuardtuneError):
    status_code = 403
    type = "invalid_request_error"


class NotFound(GuardtuneError):
    status_code = 404
    type = "invalid_request_error"


class Conflict(GuardtuneError):
    status_code = 409
    type = "invalid_request_error"


class PayloadTooLarge(GuardtuneError):
    status_code = 413
    type = "invalid_request_error"


class UnsupportedMediaType(GuardtuneError):
    status_code = 415
    type = "invalid_request_error"


class Unprocessable(GuardtuneError):
    status_code = 422
    type = "invalid_request_error"


class RateLimited(GuardtuneError):
    """429; ``usage`` is the budget that was exceeded (:class:`core.ratelimit.Usage`)."""

    status_code = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, usage: Usage | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.usage = usage
