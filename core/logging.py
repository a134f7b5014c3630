"""Structured logs (structlog): JSON lines in services, readable lines on a terminal.

The app's own lines (structlog) and every standard-library logger's (uvicorn's server and
access lines, Celery's worker and task lines, libraries') leave through the same processors
and renderer: one JSON object a line with ``event``, ``level`` and ``timestamp`` (plus
``logger`` for a library's line, and the context bound with ``structlog.contextvars``, a
request's ``request_id`` say). A uvicorn access line also carries its parts as fields:
``client``, ``method``, ``path``, ``http_version``, ``status_code``. Servers pass
``log_config=None`` to uvicorn so that it adds no handlers of its own."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

from core.settings import get_settings

UVICORN_ACCESS = "uvicorn.access"
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status_code")


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is when a line is logged, not the one
    at configure time (a CLI run in-process by a test runner swaps it per invocation)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _StructuredHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler that :func:`configure_logging` installs (and replaces on a re-run)."""


def _access_fields(_: Any, __: str, event: EventDict) -> EventDict:
    """A uvicorn access line's arguments as fields (uvicorn logs them as
    ``(client, method, path, http_version, status_code)``); other lines' arguments are dropped
    (they are in the message already)."""
    args, record = event.pop("positional_args", None), event.get("_record")
    if record is not None and record.name == UVICORN_ACCESS and isinstance(args, tuple):
        if len(args) == len(ACCESS_FIELDS):
            event.update(zip(ACCESS_FIELDS, args, strict=True))
    return event


def configure_logging() -> None:
    """Structured logs to stderr (JSON lines with ``GUARDTUNE_LOG_JSON``, else readable), at
    ``GUARDTUNE_LOG_LEVEL``, for structlog and the standard library alike; stdout stays the
    program's own output."""
    settings = get_settings()
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # structlog types ``file`` as TextIO; PrintLogger calls only its write and flush.
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = _StructuredHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _access_fields],
            pass_foreign_args=True,  # for _access_fields
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StructuredHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
