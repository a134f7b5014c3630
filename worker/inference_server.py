"""``guardtune infer``: the embedded inference backend, an HTTP app around
:class:`safety.inference.Engine`.

Endpoints:

* ``POST /v1/chat/completions`` — OpenAI's request plus the ``guardtune`` target
  (:class:`core.chat.InferRequest`), sent by the API after it authorized the caller; answers
  a ``chat.completion`` or, with ``stream``, server-sent ``chat.completion.chunk`` events
  ending with ``data: [DONE]``. It honours what :mod:`core.chat_params` lists for the
  embedded backend (``n``, ``stop``, ``logprobs``/``top_logprobs``, the penalties and
  ``logit_bias`` through :mod:`safety.decoding`) and answers 400 ``unsupported_parameter``
  for anything else the request sets.
* ``GET /health`` — ``{"status": "ok", "loaded": {base: [adapters…]}, "batches": [...]}``.
* ``GET /metrics`` — Prometheus: latency, batch sizes, tokens generated (:mod:`worker.metrics`).

Adapters are fetched from the object store on first use into ``$HOME/infer-adapters/<sha256>``
(content-addressed; the digest is checked before the directory is used). The process listens
on ``GUARDTUNE_INFER_HOST`` (loopback by default): it trusts the API, not the network.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import chat
from core.chat_params import unknown_parameter, unsupported_parameter
from core.errors import GuardtuneError, InvalidRequest
from core.inference import InferenceUnavailable, embedded_adapter_root, fetch_adapter
from core.logging import configure_logging
from core.settings import get_settings
from core.storage import get_store
from worker.metrics import INFERENCE_BATCH_SIZE, INFERENCE_COMPLETION_TOKENS, INFERENCE_SECONDS, registry

if TYPE_CHECKING:
    from safety.inference import ChatRequest, Engine


def make_engine() -> Engine:
    from safety.inference import Engine
    from worker.pipeline.resources import load_model

    settings = get_settings()
    return Engine(
        load_model,
        max_adapters=settings.infer_max_adapters,
        max_batch=settings.infer_max_batch,
        batch_wait_s=settings.infer_batch_wait_ms / 1000,
        on_batch=INFERENCE_BATCH_SIZE.observe,
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

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(body: chat.InferRequest) -> JSONResponse | StreamingResponse | dict[str, Any]:
        if (refused := _refusal(body)) is not None:
            return _error(refused)
        target = body.guardtune
        try:
            adapter_dir = fetch_adapter(get_store(), target.adapter, adapter_root) if target.adapter else None
        except (OSError, ValueError) as exc:
            return _error(InferenceUnavailable(f"adapter unavailable: {exc}", code="adapter_unavailable"))
        request = _chat_request(body, settings.chat_max_tokens, adapter_dir)
        started = time.monotonic()
        engine.submit(request)
        id_ = chat.new_completion_id()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            first = _next(request.events, timeout_s)
            if first[0] == "invalid":
                return _error(_invalid(first[1]))
            events = _replay(first, request.events, timeout_s)
            return StreamingResponse(
                _stream(events, id_, body.model, request.n, include_usage, started), media_type="text/event-stream"
            )
        while (event := _next(request.events, timeout_s))[0] == "delta":
            pass
        if event[0] == "invalid":
            return _error(_invalid(event[1]))
        if event[0] == "error":
            return _error(GuardtuneError(event[1], code="inference_failed"))
        done = event[1]
        _observe(started, stream=False, completion_tokens=done.completion_tokens)
        choices = [chat.choice(i, c.text, c.finish_reason, c.logprobs) for i, c in enumerate(done.choices)]
        return chat.completion(id_, body.model, choices, done.prompt_tokens, done.completion_tokens)

    return app


def _refusal(body: chat.InferRequest) -> GuardtuneError | None:
    """The 400 for an argument OpenAI does not define or one this backend cannot honour
    (the API checks both first: this guards direct calls)."""
    if (name := unknown_parameter(body)) is not None:
        return InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")
    if (name := unsupported_parameter(body, "embedded")) is not None:
        return InvalidRequest(
            f"{name!r} is not supported by the embedded inference backend.", param=name, code="unsupported_parameter"
        )
    return None


def _invalid(detail: tuple[str, str]) -> GuardtuneError:
    param, message = detail
    return InvalidRequest(message, param=param, code="invalid_value")


def _chat_request(body: chat.InferRequest, max_tokens: int, adapter_dir: Path | None) -> ChatRequest:
    from safety.decoding import RowSettings
    from safety.inference import ChatRequest

    target = body.guardtune
    return ChatRequest(
        messages=[m.plain() for m in body.messages],
        base=target.base,
        max_tokens=body.requested_max_tokens() or max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        n=body.n or 1,
        stop=body.stop_list(),
        decoding=RowSettings(
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            logit_bias={int(k): float(v) for k, v in (body.logit_bias or {}).items()},
            logprobs=bool(body.logprobs),
            top_logprobs=body.top_logprobs or 0,
        ),
        adapter=target.adapter.id if target.adapter else None,
        adapter_dir=adapter_dir,
    )


def _next(events: queue.Queue[tuple[str, Any]], timeout_s: float) -> tuple[str, Any]:
    try:
        return events.get(timeout=timeout_s)
    except queue.Empty:
        return ("error", f"generation took longer than {timeout_s:.0f}s")


def _replay(
    first: tuple[str, Any], events: queue.Queue[tuple[str, Any]], timeout_s: float
) -> Iterator[tuple[str, Any]]:
    """``first``, then the request's events up to and including the last one."""
    event = first
    while True:
        yield event
        if event[0] != "delta":
            return
        event = _next(events, timeout_s)


def _observe(started: float, *, stream: bool, completion_tokens: int) -> None:
    """A finished completion's latency (from submission) and tokens."""
    INFERENCE_SECONDS.labels(str(stream).lower()).observe(time.monotonic() - started)
    INFERENCE_COMPLETION_TOKENS.inc(completion_tokens)


def _stream(
    events: Iterator[tuple[str, Any]], id_: str, model: str, n: int, include_usage: bool, started: float
) -> Iterator[bytes]:
    for index in range(n):
        yield chat.sse(chat.chunk(id_, model, {"role": "assistant", "content": ""}, index=index))
    for kind, value in events:
        if kind == "delta":
            yield chat.sse(chat.chunk(id_, model, {"content": value.text}, index=value.index, logprobs=value.logprobs))
            continue
        if kind != "done":
            yield chat.sse(GuardtuneError(str(value), code="inference_failed").to_dict())
            break
        _observe(started, stream=True, completion_tokens=value.completion_tokens)
        for index, choice in enumerate(value.choices):
            yield chat.sse(chat.chunk(id_, model, {}, choice.finish_reason, index=index))
        if include_usage:
            yield chat.sse(
                chat.chunk(id_, model, None, usage_=chat.usage(value.prompt_tokens, value.completion_tokens))
            )
    yield chat.SSE_DONE


def serve() -> None:
    """Run the app under uvicorn on ``GUARDTUNE_INFER_HOST:GUARDTUNE_INFER_PORT``."""
    import uvicorn

    settings = get_settings()
    configure_logging()
    uvicorn.run(
        create_app(),
        host=settings.infer_host,
        port=settings.infer_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through the app's structured logging (core.logging)
    )
