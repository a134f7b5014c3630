"""Words used across domains, each a ``str`` enum defined once, and the annotation that puts
an enum on the wire in the shape the API has always documented.

``str`` enums compare equal to, and serialize as, their values, so rows and JSON hold the same
plain strings as before. The job vocabulary (statuses, stages, error codes, safety modes…)
lives in :mod:`core.jobs.vocab`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class FileStatus(StrEnum):
    """An uploaded file's ``status`` (OpenAI's values)."""

    UPLOADED = "uploaded"
    PROCESSED = "processed"
    ERROR = "error"


class UploadStatus(StrEnum):
    """An upload's ``status`` (OpenAI's values): parts are accepted while ``pending``."""

    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class BaseModelStatus(StrEnum):
    """A base model's registry status: registered, onboarded (``ready``), or onboarding failed."""

    REGISTERED = "registered"
    READY = "ready"
    FAILED = "failed"


class KeyScope(StrEnum):
    """What an API key may do: a customer's own organization, or the admin API as well."""

    CUSTOMER = "customer"
    ADMIN = "admin"


class _AsLiteral:
    """Validate and document a ``StrEnum`` field as an inline string enum.

    ``Annotated[SafetyMode, AS_LITERAL]`` validates to a ``SafetyMode`` member, serializes as
    its value, and renders in JSON Schema exactly as ``Literal["adaptive", "constant",
    "none"]`` did (an inline ``enum``, no ``$defs`` entry, the same validation error), so
    the OpenAPI document and error messages stay what clients already know."""

    def __get_pydantic_core_schema__(self, source: type[StrEnum], handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(
            source, core_schema.literal_schema([member.value for member in source])
        )


AS_LITERAL = _AsLiteral()
