"""Router-level authentication: routers list one of these as ``dependencies``; handlers
never repeat the check (they take ``CallerDep``, which FastAPI resolves once per request)."""

from __future__ import annotations

from fastapi import Depends, Security
from fastapi.security import HTTPBearer

from api.deps import authenticate, require_admin

# Only documents the scheme in OpenAPI (the "Authorize" button of /docs); the check
# itself, and its OpenAI-shaped 401, is ``api.deps.identify`` (run by ``api.routing.GuardedRoute``).
bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", description="Authorization: Bearer <API key>")

CUSTOMER = [Security(bearer), Depends(authenticate)]
ADMIN = [Security(bearer), Depends(require_admin)]
