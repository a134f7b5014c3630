"""OpenAI's chat-completions wire format, shared by the API and the inference backends.

* :class:`ChatCompletionRequest` is what a client may send (unsupported OpenAI fields are
  ignored; ``n`` other than 1 and tool/function messages are rejected).
* :meth:`ChatCompletionRequest.forward_body` is the canonical body the API forwards to a
  backend: messages with plain-text contents, ``max_tokens`` always set.
* :class:`InferenceTarget` is guardtune's extension on the body sent to the embedded
  ``guardtune infer`` process: which base model to load and which adapter to apply.
* :func:`completion`, :func:`chunk` and :func:`sse` build the response objects and the
  server-sent-event lines (a stream ends with :data:`SSE_DONE`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.ids import new_id

SSE_DONE = b"data: [DONE]\n\n"


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def plain(self) -> dict[str, str]:
        """``{"role", "content"}`` with text parts joined (``developer`` is a system message)."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request that guardtune serves."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def forward_body(self, model: str, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [m.plain() for m in self.messages],
            "max_tokens": max_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "stream": bool(self.stream),
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stream:
            body["stream_options"] = {"include_usage": bool(self.stream_options and self.stream_options.include_usage)}
        return body


class AdapterRef(BaseModel):
    id: str
    storage_prefix: str
    sha256: str


class InferenceTarget(BaseModel):
    """What the embedded backend loads: the base model's source and an optional adapter."""

    base: str
    adapter: AdapterRef | None = None


class InferRequest(ChatCompletionRequest):
    """The body ``guardtune infer`` accepts: a forwarded request plus its target."""

    guardtune: InferenceTarget


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_completion_id() -> str:
    return new_id("chatcmpl")


def completion(
    id_: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    id_: str,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage_: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_,
    }


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
