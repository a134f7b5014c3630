"""Organizations and API keys (admin-scoped keys only)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.jobs.vocab import SafetyMode
from core.models import ApiKey, Organization
from core.vocab import AS_LITERAL, KeyScope

ALLOWED_MODES_DOC = (
    "Safety modes this organization's customer keys may ask; null: the deployment's GUARDTUNE_ALLOWED_MODES"
)


# The columns' ranges (INTEGER, BIGINT): a larger number is a 400, not a database error.
MaxJobs = Annotated[int, Field(ge=0, le=2**31 - 1, description="Override of the deployment default")]
MaxBytes = Annotated[int, Field(ge=0, le=2**63 - 1, description="Override of the deployment default")]


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    max_concurrent_jobs: MaxJobs | None = None
    max_storage_bytes: MaxBytes | None = None
    allowed_modes: list[Annotated[SafetyMode, AS_LITERAL]] | None = Field(
        None, min_length=1, description=ALLOWED_MODES_DOC
    )


class OrganizationUpdate(BaseModel):
    """Only the fields sent change; send null to fall back to the deployment default."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: MaxJobs | None = None
    max_storage_bytes: MaxBytes | None = None
    allowed_modes: list[Annotated[SafetyMode, AS_LITERAL]] | None = Field(
        None, min_length=1, description=ALLOWED_MODES_DOC
    )


class OrganizationObject(BaseModel):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    created_at: int
    max_concurrent_jobs: int | None = None
    max_storage_bytes: int | None = None
    allowed_modes: list[Annotated[SafetyMode, AS_LITERAL]] | None = None

    @classmethod
    def of(cls, row: Organization) -> OrganizationObject:
        return cls(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            max_concurrent_jobs=row.max_concurrent_jobs,
            max_storage_bytes=row.max_storage_bytes,
            allowed_modes=row.allowed_modes,
        )


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    scope: Annotated[KeyScope, AS_LITERAL] = KeyScope.CUSTOMER


class ApiKeyObject(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    organization_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it")
    scope: Annotated[KeyScope, AS_LITERAL]
    created_at: int
    last_used_at: int | None = None
    revoked_at: int | None = None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyObject:
        return cls(
            id=row.id,
            organization_id=row.org_id,
            name=row.name,
            prefix=row.prefix,
            scope=KeyScope(row.scope),
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


class ApiKeyCreated(ApiKeyObject):
    key: str = Field(description="The secret key. Shown only in this response; store it now.")
