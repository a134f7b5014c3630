"""The dashboard: one static page (plain JS as ES modules, no build step, no external assets).

``GET /dashboard`` serves the page and ``GET /dashboard/static/<name>`` its assets: the
stylesheet and every ``*.js`` module of this folder (``app.js`` imports the others by
relative URL, so they share the one flat ``static/`` path), each with its JS media type,
which module scripts require (``nosniff``). One module is not a file: ``vocab.js``, the job
vocabulary generated from :mod:`core.jobs` (:mod:`api.dashboard.vocab`), served with the same
headers and a content-hash ``ETag`` (files get Starlette's mtime/size one).

Neither needs auth: the page asks for an API key and sends it, from the browser
session only, as ``Authorization: Bearer`` to the ``/v1`` API. A strict Content
Security Policy forbids inline scripts and any other origin, so text from the API
can never run as code in the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.dashboard.vocab import VOCAB_ETAG, VOCAB_JS
from api.routing import GuardedRoute
from core.errors import NotFound

DASHBOARD_DIR = Path(__file__).resolve().parent

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Only these files are served (an allow-list built once: no path ever reaches the filesystem).
_ASSETS = {p.name: p for p in DASHBOARD_DIR.iterdir() if p.suffix in (".js", ".css")} if DASHBOARD_DIR.is_dir() else {}

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(route_class=GuardedRoute, tags=["dashboard"], include_in_schema=False)


@router.get("/dashboard")
def dashboard_page() -> FileResponse:
    """The dashboard page."""
    return FileResponse(DASHBOARD_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@router.get("/dashboard/")
def dashboard_slash() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=308)


@router.get("/dashboard/static/vocab.js")
def dashboard_vocab() -> Response:
    """The generated ``vocab.js`` module (statuses, stages, error codes from ``core.jobs``)."""
    return Response(VOCAB_JS, media_type=_MEDIA_TYPES[".js"], headers={**_HEADERS, "ETag": VOCAB_ETAG})


@router.get("/dashboard/static/{name}")
def dashboard_asset(name: str) -> FileResponse:
    """A static asset of the page (``style.css``, ``app.js`` and the modules it imports)."""
    path = _ASSETS.get(name)
    if path is None:
        raise NotFound(f"No dashboard asset named {name!r}.", code="not_found")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_HEADERS)
