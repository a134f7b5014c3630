"""Test data builders and helpers of the API tests."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core.jobs.pipeline import START_TASK as PIPELINE_TASK
from core.models import AuditRecord, Job

ORG_PREFIX = "api-test-"
BASE_MODEL = "smollm2-135m-instruct"


# -- data --------------------------------------------------------------------------------
def chat(user: str = "What is 2+2?", assistant: str = "4.", system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


def jsonl(*examples: Any) -> bytes:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in examples).encode()


GOOD = jsonl(chat("Hi", "Hello!"), chat("Capital of France?", "Paris.", system="Be brief."), chat("2+2?", "4"))


@dataclass
class Tenant:
    org_id: str
    key_id: str
    key: str
    name: str


def auth(who: Tenant | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {who.key if isinstance(who, Tenant) else who}"}


# -- broker --------------------------------------------------------------------------------
def pipeline_messages(broker) -> list[tuple[bytes, str]]:
    """``(raw message, job id)`` of the pipeline tasks waiting in the default queue, oldest first."""
    out = []
    for raw in reversed(broker.lrange("default", 0, -1)):  # kombu LPUSHes, workers BRPOP
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != PIPELINE_TASK:
            continue
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((raw, args[0] if args else ""))
    return out


def queued_job_ids(broker) -> list[str]:
    return [job_id for _, job_id in pipeline_messages(broker)]


# -- database ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    files: int
    jobs: int
    events: int
    audit: int
    objects: tuple[str, ...]
    queued: int


def audit_actions(db: Engine, target: str) -> list[str]:
    with Session(db) as session:
        return list(
            session.scalars(select(AuditRecord.action).where(AuditRecord.target == target).order_by(AuditRecord.seq))
        )


def set_job(db: Engine, job_id: str, **values: Any) -> None:
    """Move a job the way a worker would (tests stand in for the pipeline)."""
    with Session(db) as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(**values))
