"""Shapes shared by every resource: OpenAI's error object and list envelopes."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every failure: OpenAI's error object."""

    error: ErrorDetail


class CursorPage(BaseModel, Generic[T]):
    """OpenAI's cursor page: pass the last ``id`` as ``after`` for the next page."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class ListObject(BaseModel, Generic[T]):
    """An unpaginated list (``GET /v1/models``)."""

    object: Literal["list"] = "list"
    data: list[T] = Field(default_factory=list)


def page(items: list, has_more: bool) -> dict:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0].id if items else None,
        "last_id": items[-1].id if items else None,
    }


def _error(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


# Documented on every authenticated router; endpoint-specific codes are added per route.
COMMON_ERRORS: dict[int | str, dict] = {
    400: _error("Invalid request (the error names the parameter)"),
    401: _error("Missing, unknown or revoked API key"),
    404: _error("Not found (another organization's ids answer 404 too)"),
}
