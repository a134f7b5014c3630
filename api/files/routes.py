"""``/v1/files`` (OpenAI's Files API, purpose ``fine-tune``)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import CUSTOMER
from api.deps import CallerDep, SessionDep, SettingsDep
from api.files.deps import FileServiceDep
from api.files.schemas import UPLOAD_REQUEST_BODY, FileDeleted, FileObject
from api.files.uploads import receive_upload
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS, CursorPage, ErrorResponse, page
from core.ratelimit import take_request

router = APIRouter(
    route_class=GuardedRoute, prefix="/files", tags=["files"], dependencies=CUSTOMER, responses=COMMON_ERRORS
)


@router.post(
    "",
    response_model=FileObject,
    summary="Upload a JSONL training file",
    openapi_extra=UPLOAD_REQUEST_BODY,
    responses={
        409: {"model": ErrorResponse, "description": "The organization's storage quota would be exceeded"},
        413: {"model": ErrorResponse, "description": "The file is over the upload limit (nothing is stored)"},
        429: {"model": ErrorResponse, "description": "The organization's uploads per minute (see Retry-After)"},
        415: {"model": ErrorResponse, "description": "Not a JSONL file / not multipart"},
    },
)
async def upload_file(
    request: Request, caller: CallerDep, session: SessionDep, settings: SettingsDep, service: FileServiceDep
) -> FileObject:
    """Multipart upload, streamed: the size limit is enforced while the body arrives and the
    JSONL is validated line by line. The file's ``status`` is ``processed`` or ``error``
    (``status_details`` lists the first errors with their line numbers)."""
    await run_in_threadpool(take_request, "uploads", caller.org_id)  # 429 before a byte of the file is read
    await run_in_threadpool(session.close)  # hold no connection while the body arrives
    upload = await receive_upload(request, max_bytes=settings.max_file_bytes)
    try:
        row = await run_in_threadpool(service.create, caller, upload)
    finally:
        upload.close()
    return FileObject.of(row)


@router.get("", response_model=CursorPage[FileObject], summary="List files")
def list_files(
    caller: CallerDep,
    service: FileServiceDep,
    after: Annotated[str | None, Query(description="A file id: list the files after it")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[Literal["asc", "desc"], Query(description="By created_at")] = "desc",
    purpose: str | None = None,
) -> dict:
    rows, has_more = service.list(caller, after=after, limit=limit, order=order, purpose=purpose)
    return page([FileObject.of(r) for r in rows], has_more)


@router.get("/{file_id}", response_model=FileObject, summary="Retrieve a file")
def retrieve_file(file_id: str, caller: CallerDep, service: FileServiceDep) -> FileObject:
    return FileObject.of(service.get(caller, file_id))


@router.delete(
    "/{file_id}",
    response_model=FileDeleted,
    summary="Delete a file",
    responses={409: {"model": ErrorResponse, "description": "An active job uses the file"}},
)
def delete_file(file_id: str, caller: CallerDep, service: FileServiceDep) -> FileDeleted:
    row = service.delete(caller, file_id)
    return FileDeleted(id=row.id, deleted=True)


@router.get(
    "/{file_id}/content",
    summary="Download a file's content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
def file_content(file_id: str, caller: CallerDep, service: FileServiceDep) -> StreamingResponse:
    row, chunks = service.content(caller, file_id)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(row.filename)}",
        },
    )
