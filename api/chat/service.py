"""Chat completions: check the request's size and the organization's budgets
(:mod:`api.chat.limits`), authorize the model, forward to the inference backend (:mod:`core.inference`) and relay its answer.

A model is servable when it is a registry base model or a released, non-revoked model of
the caller's organization; anything else (another organization's model, a blocked job's
adapter, a revoked model) is 404 ``model_not_found``, checked on every request, so a
revocation takes effect on the next one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy.orm import Session

from api.chat import limits
from api.deps import Caller
from api.models.repository import ModelRepository
from core.chat import ChatCompletionRequest
from core.chat_params import unknown_parameter, unsupported_parameter
from core.errors import GuardtuneError, InvalidRequest, NotFound
from core.inference import CHAT_PATH, Backend, InferenceUnavailable, ServingTarget, adapter_ref
from core.models import BaseModelEntry
from core.quoting import quoted
from core.releases.repository import ReleaseRepository
from core.settings import Settings


class BackendError(GuardtuneError):
    """A backend's own error object, relayed with its status."""

    def __init__(self, status: int, body: dict[str, Any]):
        error = body.get("error")
        if not isinstance(error, dict):
            error = {}
        super().__init__(str(error.get("message") or body)[:1000], code=error.get("code"), param=error.get("param"))
        self.status_code = status
        self.type = error.get("type") or ("invalid_request_error" if status < 500 else "server_error")


def authorize(
    session: Session, caller: Caller, request: ChatCompletionRequest, settings: Settings
) -> tuple[ServingTarget, dict[str, str]]:
    """Check the request's size, count it against the organization's budgets, then resolve
    ``request.model`` for it: the target and the answer's ``x-ratelimit-*`` headers
    (:mod:`api.chat.limits`); an argument the backend cannot honour is refused first and
    counts nothing."""
    check_parameters(request, settings)
    wanted = request.requested_max_tokens()
    if wanted is not None and wanted > settings.chat_max_tokens:
        raise InvalidRequest(
            f"max_tokens is at most {settings.chat_max_tokens} on this server.",
            param="max_tokens",
            code="invalid_value",
        )
    prompt_tokens = limits.check_size(request, settings)
    rate_headers = limits.admit(caller.org_id, prompt_tokens + (wanted or settings.chat_max_tokens))
    return _target(session, caller, request), rate_headers


def _target(session: Session, caller: Caller, request: ChatCompletionRequest) -> ServingTarget:
    """``request.model`` as the caller's organization may be served it (404 otherwise)."""
    repo = ModelRepository(session)
    released = ReleaseRepository(session, caller.org_id).serving(request.model)
    if released is not None:
        base = session.get(BaseModelEntry, released.base_model)
        if base is None:
            raise NotFound(
                f"The base model of {quoted(request.model)} is no longer registered.",
                code="model_not_found",
                param="model",
            )
        return ServingTarget(request.model, base.id, base.source, adapter_ref(released))
    base = repo.base_model(request.model)
    if base is None:
        raise NotFound(
            f"The model {quoted(request.model)} does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return ServingTarget(request.model, base.id, base.source)


def check_parameters(request: ChatCompletionRequest, settings: Settings) -> None:
    """400 for an argument OpenAI does not define (``unknown_parameter``) or one the
    configured backend cannot honour (``unsupported_parameter``; :mod:`core.chat_params`)."""
    if (name := unknown_parameter(request)) is not None:
        raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")
    if (name := unsupported_parameter(request, settings.inference_backend)) is not None:
        raise InvalidRequest(
            f"{name!r} is not supported by this server's {settings.inference_backend} inference backend.",
            param=name,
            code="unsupported_parameter",
        )


async def forward(
    backend: Backend, target: ServingTarget, body: dict[str, Any], timeout_s: float
) -> tuple[httpx.AsyncClient, httpx.Response]:
    """Send the request; returns the open client and a 200 response (streamed), or raises
    the backend's error (503 when it cannot be reached)."""
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5))

    async def send() -> httpx.Response:
        request = client.build_request(
            "POST", backend.url + CHAT_PATH, json=backend.body(target, body), headers=backend.headers
        )
        response = await client.send(request, stream=True)
        if response.status_code != 200:  # an error body is small: read it and free the connection
            await response.aread()
            await response.aclose()
        return response

    try:
        response = await send()
        if response.status_code != 200 and await backend.recover(target, response):
            response = await send()
        if response.status_code != 200:
            raise _backend_error(response)
        return client, response
    except httpx.HTTPError as exc:
        await client.aclose()
        raise InferenceUnavailable(
            f"The inference backend is unavailable ({type(exc).__name__}); try again shortly.",
            code="inference_unavailable",
        ) from None
    except BaseException:
        await client.aclose()
        raise


def _backend_error(response: httpx.Response) -> GuardtuneError:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:500] or f"status {response.status_code}"}}
    if response.status_code >= 500 or not isinstance(body, dict):
        return InferenceUnavailable(f"The inference backend failed: {str(body)[:500]}", code="inference_failed")
    return BackendError(response.status_code, body)


async def relay(client: httpx.AsyncClient, response: httpx.Response) -> AsyncIterator[bytes]:
    """The backend's server-sent events, as they arrive."""
    try:
        async for part in response.aiter_bytes():
            yield part
    finally:
        await response.aclose()
        await client.aclose()
