"""``model`` objects (OpenAI's shape)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelDeleted(BaseModel):
    """``DELETE /v1/models/{model}``: the fine-tuned model is revoked (no longer served)."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool
