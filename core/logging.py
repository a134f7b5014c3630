"""Structured logs (structlog): JSON lines in services, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import FilteringBoundLogger

from core.settings import get_settings


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is when a line is logged, not the one
    at configure time (a CLI run in-process by a test runner swaps it per invocation)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging() -> None:
    """Structured logs to stderr (JSON lines with ``GUARDTUNE_LOG_JSON``, else readable), at
    ``GUARDTUNE_LOG_LEVEL``; stdout stays the program's own output."""
    settings = get_settings()
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # structlog types ``file`` as TextIO; PrintLogger calls only its write and flush.
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
