"""A small HTTP server speaking the part of vLLM's OpenAI-compatible API guardtune uses
(vLLM itself needs a GPU): ``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``
and ``POST /v1/chat/completions`` for the served base model or a loaded adapter (``n``
choices; a tool call when the request has ``tools``; log-probabilities when asked), with
vLLM's status codes (400 for an adapter already loaded or a path without an adapter, 404
for an unknown adapter or model). Its answer names the adapter directory it read, so a
test sees which adapter served a request. Started with ``api_key`` it answers 401 to a
``/v1`` request without ``Authorization: Bearer <api_key>``, as ``vllm serve --api-key`` does
(``refused`` counts those)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tests.conftest import free_port


def _error(status: int, message: str, type_: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": status}}, status)


def _choice(index: int, text: str, body: dict) -> dict:
    """One choice as vLLM writes it: with ``tools``, a call of the first tool
    (``finish_reason: "tool_calls"``); with ``logprobs``, an entry per word."""
    message: dict = {"role": "assistant", "content": text}
    finish_reason = "stop"
    if body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        call = {"id": f"chatcmpl-tool-{index}", "type": "function", "function": {"name": name, "arguments": ARGUMENTS}}
        message, finish_reason = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    logprobs = None
    if body.get("logprobs"):
        logprobs = {
            "content": [
                {"token": word, "logprob": -0.5, "bytes": list(word.encode()), "top_logprobs": []}
                for word in text.split(" ")
            ]
        }
    return {"index": index, "finish_reason": finish_reason, "message": message, "logprobs": logprobs}


ARGUMENTS = '{"city": "Paris"}'


class FakeVllm:
    def __init__(self, served_model: str, port: int | None = None, api_key: str | None = None):
        self.served_model, self.api_key = served_model, api_key
        self.refused = 0
        self.loras: dict[str, str] = {}  # lora_name -> lora_path
        self.requests: list[dict] = []
        self.app = self._app()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeVllm:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "fake vLLM did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def check_key(request: Request, call_next):
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                self.refused += 1
                return JSONResponse({"error": "Unauthorized"}, 401)
            return await call_next(request)

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request):
            body = await request.json()
            name, path = body["lora_name"], body["lora_path"]
            if name in self.loras:
                return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
            if not (Path(path) / "adapter_config.json").is_file():
                return _error(400, f"No adapter found for {path}", "BadRequestError")
            self.loras[name] = path
            return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

        @app.post("/v1/unload_lora_adapter")
        async def unload(request: Request):
            name = (await request.json())["lora_name"]
            if self.loras.pop(name, None) is None:
                return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            model = body["model"]
            if model != self.served_model and model not in self.loras:
                return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
            text = f"{Path(self.loras[model]).name if model in self.loras else 'base'} says hi"
            base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
            if not body.get("stream"):
                return {
                    **base,
                    "object": "chat.completion",
                    "choices": [_choice(i, text, body) for i in range(body.get("n") or 1)],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                }

            def events():
                for i, word in enumerate(text.split(" ")):
                    delta = {"content": word if i == 0 else " " + word}
                    chunk = {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app
