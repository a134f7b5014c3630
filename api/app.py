"""The FastAPI app factory."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.metrics import install_metrics
from api.routes import health
from core.logging import configure_logging


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(
        title="guardtune",
        version="0.1.0",
        description="OpenAI-compatible fine-tuning API with risk-adaptive safety regularization and a release gate.",
    )
    install_error_handlers(app)
    install_metrics(app)
    app.include_router(health.router)
    return app
