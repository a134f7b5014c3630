"""``/v1/fine_tuning/jobs`` (OpenAI's fine-tuning API) plus the safety report."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from api.auth import CUSTOMER
from api.conditional import NOT_MODIFIED, conditional, conditional_json, conditional_rows
from api.deps import CallerDep
from api.jobs.deps import JobServiceDep
from api.jobs.params import metadata_filter
from api.jobs.schemas import FineTuningJob, JobCheckpoint, JobCreate, JobEstimate, JobEvent, SafetyReport
from api.routing import GuardedRoute
from api.schemas import COMMON_ERRORS, CursorPage, ErrorResponse, page

router = APIRouter(
    route_class=GuardedRoute,
    prefix="/fine_tuning/jobs",
    tags=["fine-tuning"],
    dependencies=CUSTOMER,
    responses=COMMON_ERRORS,
)

After = Annotated[str | None, Query(description="The id of the last item of the previous page")]


@router.post(
    "",
    response_model=FineTuningJob | JobEstimate,
    summary="Create a fine-tuning job (or, with dry_run=true, estimate it)",
    responses={
        422: {"model": ErrorResponse, "description": "Idempotency-Key reused with a different body"},
        429: {
            "model": ErrorResponse,
            "description": "Too many concurrent jobs in this organization, or job creations per minute (Retry-After)",
        },
    },
)
def create_job(
    body: JobCreate,
    caller: CallerDep,
    service: JobServiceDep,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Retries with the same key return the same job"),
    ] = None,
    dry_run: Annotated[
        bool,
        Query(description="true: check the request and answer a fine_tuning.job.estimate; no job is created"),
    ] = False,
) -> FineTuningJob | JobEstimate:
    """Starts in ``validating_files``; the pipeline is queued after the job is committed.
    ``"auto"`` hyperparameters are resolved from the training file (see the job's values).
    With ``dry_run=true`` (an extension; the SDK's ``extra_query={"dry_run": "true"}``) the
    request is checked as a create is and answered with its estimate (examples, tokens,
    steps, expected wall time from the workers' measured throughput); nothing is created."""
    if dry_run:
        return service.estimate(caller, body)
    return service.present(service.create(caller, body, idempotency_key))


@router.get(
    "",
    response_model=CursorPage[FineTuningJob],
    summary="List fine-tuning jobs, newest first (ETag / If-None-Match)",
    responses=NOT_MODIFIED,
)
def list_jobs(
    request: Request,
    caller: CallerDep,
    service: JobServiceDep,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """``metadata[KEY]=VALUE`` query parameters (the SDK's ``metadata={...}``) keep only the
    jobs whose metadata has every given pair; a malformed filter answers 400."""
    wanted = metadata_filter(request.query_params.multi_items())
    jobs, has_more = service.list(caller, after=after, limit=limit, metadata=wanted)
    return conditional_json(request, CursorPage[FineTuningJob](**page(jobs, has_more)))


@router.get(
    "/{fine_tuning_job_id}",
    response_model=FineTuningJob,
    summary="Retrieve a fine-tuning job (ETag / If-None-Match)",
    responses=NOT_MODIFIED,
)
def retrieve_job(fine_tuning_job_id: str, request: Request, caller: CallerDep, service: JobServiceDep) -> Response:
    """One query per poll, for the row versions (the ETag): 304 if current, else the body
    kept for that ETag (:func:`api.conditional.conditional_rows`) or built from the job and its
    report; the connection goes back before the thread does."""
    try:
        service.read_only()  # the ETag comes from the rows the body is built of: no common snapshot
        etag = service.job_validator(caller, fine_tuning_job_id)
        return conditional_rows(request, etag, lambda: service.get_presented(caller, fine_tuning_job_id))
    finally:
        service.release()


@router.post(
    "/{fine_tuning_job_id}/cancel",
    response_model=FineTuningJob,
    summary="Cancel a fine-tuning job (idempotent)",
)
def cancel_job(fine_tuning_job_id: str, caller: CallerDep, service: JobServiceDep) -> FineTuningJob:
    """Queued and validating jobs are cancelled at once; a running job is marked cancelled
    and its worker stops at the next step. A finished job answers 400 ``job_not_cancellable``."""
    return service.present(service.cancel(caller, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/pause", response_model=FineTuningJob, summary="Pause a running fine-tuning job")
def pause_job(fine_tuning_job_id: str, caller: CallerDep, service: JobServiceDep) -> FineTuningJob:
    """The job becomes ``paused``; its worker checkpoints at the next training step and takes
    other work. Only running jobs (400 ``job_not_pausable`` otherwise; idempotent when paused)."""
    return service.present(service.pause(caller, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/resume", response_model=FineTuningJob, summary="Resume a paused fine-tuning job")
def resume_job(fine_tuning_job_id: str, caller: CallerDep, service: JobServiceDep) -> FineTuningJob:
    """The job is queued again and continues from its pause checkpoint exactly as if it had
    not been paused. Only paused jobs (400 ``job_not_paused`` otherwise)."""
    return service.present(service.resume(caller, fine_tuning_job_id))


@router.get(
    "/{fine_tuning_job_id}/events",
    response_model=CursorPage[JobEvent],
    summary="List a job's events (ETag / If-None-Match)",
    responses=NOT_MODIFIED,
)
def list_events(
    fine_tuning_job_id: str,
    request: Request,
    caller: CallerDep,
    service: JobServiceDep,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[
        Literal["asc", "desc"],
        Query(description="desc (OpenAI's, newest first) or asc: oldest first, for incremental polling with after"),
    ] = "desc",
) -> Response:
    def build() -> CursorPage[JobEvent]:
        events, has_more = service.events(caller, fine_tuning_job_id, after=after, limit=limit, order=order)
        return CursorPage[JobEvent](**page(events, has_more))

    etag = service.events_validator(caller, fine_tuning_job_id, after=after, limit=limit, order=order)
    return conditional(request, etag, build)


@router.get(
    "/{fine_tuning_job_id}/checkpoints",
    response_model=CursorPage[JobCheckpoint],
    summary="List a job's checkpoints (newest first)",
)
def list_checkpoints(
    fine_tuning_job_id: str,
    caller: CallerDep,
    service: JobServiceDep,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict:
    checkpoints, has_more = service.checkpoints(caller, fine_tuning_job_id, after=after, limit=limit)
    return page(checkpoints, has_more)


@router.get(
    "/{fine_tuning_job_id}/safety_report",
    response_model=SafetyReport,
    summary="The job's safety report: dataset scan, training, evaluation, gate decision",
)
def safety_report(fine_tuning_job_id: str, caller: CallerDep, service: JobServiceDep) -> SafetyReport:
    return service.safety_report(caller, fine_tuning_job_id)
