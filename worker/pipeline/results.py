"""A job's result file: ``step_metrics.csv`` in OpenAI's columns (``step, train_loss,
train_accuracy, valid_loss, valid_mean_token_accuracy``), one row per step that has a
``metrics`` event (every ``GUARDTUNE_METRICS_EVENT_EVERY`` steps), empty cells where a
value was not measured (validation runs at checkpoints only).

It is stored as a file of the job's organization with purpose ``fine-tune-results`` (so
``files.list`` / ``files.content`` serve it) and named in the job's ``result_files``. Steps
trained twice (a worker lost after its last checkpoint) keep the later, resumed values.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.ids import new_id
from core.jobs.transitions import update_live
from core.models import File, Job, JobEvent
from core.storage import get_store, org_key
from core.vocab import FileStatus

FILENAME = "step_metrics.csv"
PURPOSE = "fine-tune-results"
COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
SOURCES = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


def step_metrics_csv(events: list[dict[str, Any]]) -> bytes:
    """The CSV of metrics events' ``data`` (oldest first; a later event of a step wins)."""
    by_step = {int(data["step"]): data for data in events}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for step in sorted(by_step):
        values = (by_step[step].get(key) for key in SOURCES)
        writer.writerow([step, *("" if value is None else repr(float(value)) for value in values)])
    return out.getvalue().encode()


def attach_step_metrics(session: Session, job: Job) -> str:
    """Store the job's ``step_metrics.csv`` and list it in ``result_files`` (in ``session``,
    audited; the caller commits). Idempotent: a job with result files keeps them."""
    if job.result_files:
        return job.result_files[0]
    rows = session.scalars(
        select(JobEvent.data).where(JobEvent.job_id == job.id, JobEvent.type == "metrics").order_by(JobEvent.seq)
    )
    body = step_metrics_csv([data for data in rows if data and "step" in data])
    file_id = new_id("file")
    key = org_key(job.org_id, "files", file_id)
    put = get_store().put_stream(key, io.BytesIO(body))
    session.add(
        File(
            id=file_id,
            org_id=job.org_id,
            filename=FILENAME,
            purpose=PURPOSE,
            bytes=put.bytes,
            sha256=put.sha256,
            storage_key=key,
            status=FileStatus.PROCESSED,
        )
    )
    session.flush()
    update_live(session, job.id, result_files=[file_id])
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="file.create",
        target=file_id,
        details={"org_id": job.org_id, "job_id": job.id, "purpose": PURPOSE, "bytes": put.bytes, "sha256": put.sha256},
    )
    return file_id
