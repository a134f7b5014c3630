"""The FastAPI app factory."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from api import health
from api.admin.routes import router as admin_router
from api.admin.webhooks import router as admin_webhooks_router
from api.bodylimit import BodyLimitMiddleware
from api.chat.routes import router as chat_router
from api.dashboard.routes import router as dashboard_router
from api.errors import install_error_handlers
from api.files.routes import router as files_router
from api.jobs.routes import router as jobs_router
from api.metrics import install_metrics
from api.models.routes import router as models_router
from api.openapi import install_openapi
from api.requestid import RequestIdMiddleware
from api.routing import GuardedRoute
from api.uploads.routes import router as uploads_router
from core.db import session_scope
from core.logging import configure_logging
from core.registry import seed_base_models
from core.settings import get_settings


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Seed the base-model registry from settings (idempotent; the schema is migrated
    by ``guardtune migrate``/``serve``) and size the endpoint thread pool
    (``GUARDTUNE_API_THREADS``, the same number the database pool is sized from)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
    try:
        with session_scope() as session:
            seed_base_models(session, get_settings())
    except IntegrityError:
        pass  # another replica seeded the same rows first
    yield


# The routes that stream a file under their own limit (api.files.uploads).
STREAMED_UPLOADS = (re.compile(r"POST /v1/files"), re.compile(r"POST /v1/uploads/[^/]+/parts"))


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        lifespan=lifespan,
        title="guardtune",
        version="0.1.0",
        description=(
            "OpenAI-compatible fine-tuning API with risk-adaptive safety regularization and a release gate.\n\n"
            "Authenticate with `Authorization: Bearer <API key>`. A customer-scoped key sees its own "
            "organization only. **Admin-scoped keys are operator keys**: on `/v1/admin/…` they act across "
            "all organizations (create and limit organizations, issue and revoke keys), so they belong to "
            "the people who run the deployment, never to a customer."
        ),
    )
    app.router.route_class = GuardedRoute  # the app's own routes (``/metrics``)
    install_error_handlers(app)
    # Before routing, parsing and authentication; uploads stream under their own limit. The
    # innermost middleware, so that what it raises while a body is read reaches that reader.
    app.add_middleware(BodyLimitMiddleware, max_bytes=get_settings().max_body_bytes, exempt=STREAMED_UPLOADS)
    install_metrics(app)
    app.add_middleware(RequestIdMiddleware)  # outermost of ours: every response gets the header
    app.include_router(health.router)
    for router in (
        files_router,
        uploads_router,
        jobs_router,
        models_router,
        chat_router,
        admin_router,
        admin_webhooks_router,
    ):
        app.include_router(router, prefix="/v1")
    install_openapi(app)
    app.include_router(dashboard_router)
    return app
