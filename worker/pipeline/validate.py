"""Stage ``validate`` (light, default queue): re-check the training and validation
files streaming from the store, and that their format suits the job's method (a file
uploaded before formats were recorded is checked here only), then queue the job for the GPU stages. (Token counts need
the model's tokenizer: the scan checks them and whether its chat template renders each line,
:func:`worker.pipeline.scan.check_examples`.)"""

from __future__ import annotations

from core.datasets import Limits, validate_chunks
from core.db import session_scope
from core.jobs.transitions import transition
from core.jobs.vocab import ErrorCode, JobStatus
from core.models import File
from core.preference import format_problem, job_method
from core.settings import get_settings
from core.storage import get_store
from worker.pipeline.jobstate import StageError, live_job


def run(job_id: str) -> None:
    settings = get_settings()
    limits = Limits.from_settings(settings)
    with session_scope() as session:
        job = live_job(session, job_id)
        if job.status != JobStatus.VALIDATING_FILES:
            return  # already validated: a redelivered task carries on
        for param, file_id in (("training_file", job.training_file_id), ("validation_file", job.validation_file_id)):
            if file_id is None:
                continue
            file = session.get(File, file_id)
            if file is None or file.deleted_at is not None:
                raise StageError(
                    ErrorCode.INVALID_FILE, f"The {param.replace('_', ' ')} {file_id} no longer exists.", param
                )
            report = validate_chunks(get_store().iter_chunks(file.storage_key), limits)
            if report.error_count:
                first = "; ".join(f"line {e.line}: {e.message}" for e in report.errors[:5])
                raise StageError(
                    ErrorCode.INVALID_FILE, f"The {param.replace('_', ' ')} {file_id} is invalid: {first}", param
                )
            problem = format_problem(job_method(job.method), report.format)
            if problem is not None:
                raise StageError(ErrorCode.INVALID_FILE, f"The {param.replace('_', ' ')} {file_id}: {problem}", param)
        transition(session, job_id, JobStatus.QUEUED, message="Validated training file; job queued")
