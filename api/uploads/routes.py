"""``/v1/uploads`` (OpenAI's Uploads API): a file of up to ``GUARDTUNE_MAX_UPLOAD_BYTES``
sent in parts of up to 64 MB, then completed into a file (``client.uploads.upload_file_chunked``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.auth import CUSTOMER
from api.deps import CallerDep, SessionDep
from api.files.uploads import receive_upload
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS, ErrorResponse
from api.uploads.deps import UploadServiceDep
from api.uploads.schemas import PART_REQUEST_BODY, UploadComplete, UploadCreate, UploadObject, UploadPartObject
from core.ratelimit import take_request

router = APIRouter(
    route_class=GuardedRoute, prefix="/uploads", tags=["uploads"], dependencies=CUSTOMER, responses=COMMON_ERRORS
)

NOT_PENDING: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The upload is completed, cancelled or expired (upload_<status>)"}
}


@router.post(
    "",
    response_model=UploadObject,
    summary="Create an upload",
    responses={
        409: {"model": ErrorResponse, "description": "The organization's storage quota would be exceeded"},
        413: {"model": ErrorResponse, "description": "bytes is over GUARDTUNE_MAX_UPLOAD_BYTES"},
        415: {"model": ErrorResponse, "description": "The filename or mime_type is not JSONL"},
        429: {"model": ErrorResponse, "description": "The organization's uploads per minute (see Retry-After)"},
    },
)
def create_upload(body: UploadCreate, caller: CallerDep, service: UploadServiceDep) -> UploadObject:
    """A ``pending`` upload that accepts parts for an hour (``expires_at``). It counts as one
    upload against ``GUARDTUNE_UPLOADS_PER_MINUTE``; ``expires_after`` applies to its file."""
    take_request("uploads", caller.org_id)
    return UploadObject.of(service.create(caller, body))


@router.post(
    "/{upload_id}/parts",
    response_model=UploadPartObject,
    summary="Add a part to an upload",
    openapi_extra=PART_REQUEST_BODY,
    responses={**NOT_PENDING, 413: {"model": ErrorResponse, "description": "The part is over 64 MB"}},
)
async def add_part(
    upload_id: str, request: Request, caller: CallerDep, session: SessionDep, service: UploadServiceDep
) -> UploadPartObject:
    """Multipart, field ``data``, streamed to the object store as an object of its own. The
    parts of an upload may not add up to more than its ``bytes``."""
    await run_in_threadpool(service.pending, caller, upload_id)  # 404/409 before a byte of the part is read
    await run_in_threadpool(session.close)  # hold no connection while the body arrives
    received = await receive_upload(request, max_bytes=service.max_part_bytes, file_field="data", accept=None)
    try:
        part = await run_in_threadpool(service.add_part, caller, upload_id, received)
    finally:
        received.close()
    return UploadPartObject.of(part)


@router.post(
    "/{upload_id}/complete",
    response_model=UploadObject,
    summary="Complete an upload into a file",
    responses={
        409: {"model": ErrorResponse, "description": "Not pending (upload_<status>), or the storage quota"},
    },
)
def complete_upload(upload_id: str, body: UploadComplete, caller: CallerDep, service: UploadServiceDep) -> UploadObject:
    """``part_ids`` in the file's order, adding up to the upload's ``bytes``; ``md5`` (optional)
    is checked before anything is stored. The file is validated as ``POST /v1/files`` validates
    (``status`` ``processed`` or ``error`` with line numbers) and returned as ``file``."""
    row, file = service.complete(caller, upload_id, body)
    return UploadObject.of(row, file)


@router.post("/{upload_id}/cancel", response_model=UploadObject, summary="Cancel an upload", responses=NOT_PENDING)
def cancel_upload(upload_id: str, caller: CallerDep, service: UploadServiceDep) -> UploadObject:
    """The upload becomes ``cancelled`` and its parts are deleted; it takes no more parts."""
    return UploadObject.of(service.cancel(caller, upload_id))
