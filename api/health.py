"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SessionDep, StoreDep
from api.routing import GuardedRoute
from core.logging import get_logger
from core.queue import check_broker

log = get_logger(__name__)

router = APIRouter(route_class=GuardedRoute, tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(session: SessionDep, store: StoreDep) -> JSONResponse:
    """Database, broker and object store are reachable (503 naming the components that are
    not, and the kind of error, without hosts, ports or paths)."""
    checks: dict[str, str] = {}
    for name, probe in (
        ("database", lambda: session.execute(text("SELECT 1"))),
        ("broker", check_broker),
        ("storage", store.check),
    ):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # readiness reports every failure, whatever its kind
            # The caller is not authenticated: name the component and the kind of failure,
            # never the message (it carries hosts, ports, paths); the log has it.
            log.warning("readiness_check_failed", component=name, error=f"{type(exc).__name__}: {exc}"[:500])
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
