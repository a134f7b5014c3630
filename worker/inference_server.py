"""``guardtune infer``: the embedded inference backend, an HTTP app around
:class:`safety.inference.Engine`.

Endpoints:

* ``POST /v1/chat/completions`` — OpenAI's request plus the ``guardtune`` target
  (:class:`core.chat.InferRequest`), sent by the API after it authorized the caller; answers
  a ``chat.completion`` or, with ``stream``, server-sent ``chat.completion.chunk`` events
  ending with ``data: [DONE]``.
* ``GET /health`` — ``{"status": "ok", "loaded": {base: [adapters…]}, "batches": [...]}``.

Adapters are fetched from the object store on first use into ``$HOME/infer-adapters/<sha256>``
(content-addressed; the digest is checked before the directory is used). The process listens
on ``GUARDTUNE_INFER_HOST`` (loopback by default): it trusts the API, not the network.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from core import chat
from core.errors import GuardtuneError
from core.inference import InferenceUnavailable, embedded_adapter_root, fetch_adapter
from core.settings import get_settings
from core.storage import get_store

if TYPE_CHECKING:
    from safety.inference import Engine


def make_engine() -> Engine:
    from safety.inference import Engine
    from worker.pipeline.resources import load_model

    settings = get_settings()
    return Engine(
        load_model,
        max_adapters=settings.infer_max_adapters,
        max_batch=settings.infer_max_batch,
        batch_wait_s=settings.infer_batch_wait_ms / 1000,
    )


def _error(exc: GuardtuneError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), exc.status_code)


def create_app(engine: Engine | None = None, adapter_root: Path | None = None) -> FastAPI:
    settings = get_settings()
    engine = engine or make_engine()
    adapter_root = adapter_root or embedded_adapter_root(settings)
    timeout_s = settings.inference_timeout_s
    app = FastAPI(title="guardtune infer", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "loaded": engine.loaded(),
            "batches": len(engine.batches),
            "max_batch_seen": max(engine.batches, default=0),
        }

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(body: chat.InferRequest) -> JSONResponse | StreamingResponse | dict[str, Any]:
        from safety.inference import ChatRequest

        target = body.guardtune
        try:
            adapter_dir = fetch_adapter(get_store(), target.adapter, adapter_root) if target.adapter else None
        except (OSError, ValueError) as exc:
            return _error(InferenceUnavailable(f"adapter unavailable: {exc}", code="adapter_unavailable"))
        request = ChatRequest(
            messages=[m.plain() for m in body.messages],
            base=target.base,
            max_tokens=body.requested_max_tokens() or settings.chat_max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            adapter=target.adapter.id if target.adapter else None,
            adapter_dir=adapter_dir,
        )
        engine.submit(request)
        id_ = chat.new_completion_id()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(request.events, id_, body.model, include_usage, timeout_s), media_type="text/event-stream"
            )
        while (event := _next(request.events, timeout_s))[0] == "delta":
            pass
        if event[0] == "error":
            return _error(GuardtuneError(event[1], code="inference_failed"))
        done = event[1]
        return chat.completion(
            id_, body.model, done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens
        )

    return app


def _next(events: queue.Queue[tuple[str, Any]], timeout_s: float) -> tuple[str, Any]:
    try:
        return events.get(timeout=timeout_s)
    except queue.Empty:
        return ("error", f"generation took longer than {timeout_s:.0f}s")


def _stream(
    events: queue.Queue[tuple[str, Any]], id_: str, model: str, include_usage: bool, timeout_s: float
) -> Iterator[bytes]:
    yield chat.sse(chat.chunk(id_, model, {"role": "assistant", "content": ""}))
    while True:
        kind, value = _next(events, timeout_s)
        if kind == "delta":
            yield chat.sse(chat.chunk(id_, model, {"content": value}))
            continue
        if kind == "error":
            yield chat.sse(GuardtuneError(value, code="inference_failed").to_dict())
            break
        yield chat.sse(chat.chunk(id_, model, {}, value.finish_reason))
        if include_usage:
            yield chat.sse(
                chat.chunk(id_, model, None, usage_=chat.usage(value.prompt_tokens, value.completion_tokens))
            )
        break
    yield chat.SSE_DONE


def serve() -> None:
    """Run the app under uvicorn on ``GUARDTUNE_INFER_HOST:GUARDTUNE_INFER_PORT``."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(create_app(), host=settings.infer_host, port=settings.infer_port, log_level=settings.log_level.lower())
