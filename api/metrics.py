"""Prometheus metrics for the API process (``GET /metrics``): its requests, and the
pipeline's jobs by status and queue backlog (:mod:`core.jobs.metrics`, read from the
database at each scrape)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from core.jobs.metrics import PipelineCollector

REQUESTS = Counter("guardtune_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("guardtune_http_request_seconds", "HTTP request latency", ["method", "route"])
JOBS_CREATED = Counter("guardtune_jobs_created_total", "Fine-tuning jobs created")
FILES_UPLOADED = Counter("guardtune_files_uploaded_total", "Files uploaded")
UPLOAD_BYTES = Counter("guardtune_upload_bytes_total", "Bytes uploaded")
# A registry of its own: the collector reads the API's database, so only the API's scrape may
# run it, not every process that imports this module (the inference server's, a worker's).
PIPELINE = CollectorRegistry()
PIPELINE.register(PipelineCollector())


def install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest() + generate_latest(PIPELINE), media_type=CONTENT_TYPE_LATEST)
