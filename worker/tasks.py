"""Celery tasks. Each takes ids, opens its own database session and calls a plain
function; the pipeline stages live in :mod:`worker.pipeline`."""

from __future__ import annotations

import os
import socket

from worker.celery_app import celery_app


@celery_app.task(name="guardtune.ping")
def ping(payload: dict) -> dict:
    """A round trip through broker, worker and result backend (health and tests)."""
    return {"echo": payload, "worker": f"{socket.gethostname()}:{os.getpid()}"}
