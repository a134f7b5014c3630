"""``/v1/models``: registry base models plus the organization's released fine-tuned models,
and the adapter download (a guardtune extension)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.auth import CUSTOMER
from api.deps import CallerDep, StoreDep
from api.models.deps import ModelServiceDep
from api.models.schemas import Model, ModelDeleted, ModelList
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS

router = APIRouter(
    route_class=GuardedRoute, prefix="/models", tags=["models"], dependencies=CUSTOMER, responses=COMMON_ERRORS
)


@router.get("", response_model=ModelList, summary="List models")
def list_models(caller: CallerDep, service: ModelServiceDep) -> ModelList:
    return ModelList(data=service.list(caller))


# Model ids may contain '/' (Hugging Face ids) and ':' (fine-tuned ids), hence ``:path``;
# the adapter route is declared first so that ``.../adapter`` reaches it.
@router.get(
    "/{model:path}/adapter",
    summary="Download a released model's PEFT adapter (tar)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}},
)
def download_adapter(model: str, caller: CallerDep, service: ModelServiceDep, store: StoreDep) -> StreamingResponse:
    """The adapter files (``adapter_config.json``, ``adapter_model.safetensors``, ...) of a
    released, non-revoked model of your organization, as a tar archive streamed from storage.
    Blocked, revoked and other organizations' models answer 404."""
    archive = service.adapter(caller, model, store)
    return StreamingResponse(
        archive.stream(store),
        media_type="application/x-tar",
        headers={
            "Content-Length": str(archive.size),
            "Content-Disposition": f'attachment; filename="{archive.filename}"',
            "X-Guardtune-Adapter-Sha256": archive.model.sha256,
        },
    )


@router.get("/{model:path}", response_model=Model, summary="Retrieve a model")
def retrieve_model(model: str, caller: CallerDep, service: ModelServiceDep) -> Model:
    return service.get(caller, model)


@router.delete("/{model:path}", response_model=ModelDeleted, summary="Delete (revoke) a fine-tuned model")
def delete_model(model: str, caller: CallerDep, service: ModelServiceDep, store: StoreDep) -> ModelDeleted:
    """Revokes a released ``ft:`` model of your organization (audited; its adapter is no
    longer listed, served or downloadable). Another organization's, an unknown or an already
    deleted model answers 404; a base model 403."""
    return ModelDeleted(id=service.delete(caller, model, store).id, deleted=True)
