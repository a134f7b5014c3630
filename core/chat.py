"""OpenAI's chat-completions wire format, shared by the API and the inference backends.

* :class:`ChatCompletionRequest` is what a client may send: every parameter of OpenAI's
  chat-completions request is recognized (an argument OpenAI does not define is 400
  ``unknown_parameter``, as OpenAI answers); which of them a backend honours is
  :mod:`core.chat_params` (anything else is 400 ``unsupported_parameter``, never ignored).
* :meth:`ChatCompletionRequest.forward_body` is the body the API forwards to a backend: the
  parameters that backend honours as the client sent them, messages with ``developer``
  turned into ``system``, ``max_tokens`` always set.
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
MAX_N = 8  # choices per request (n); each is generated like a request of its own
MAX_STOP = 4  # stop sequences (OpenAI's limit)
MAX_TOP_LOGPROBS = 20


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str = Field(min_length=1)
    arguments: str = Field(description="The arguments as a JSON text, as OpenAI writes them.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of the conversation: text contents (a string or text parts); an assistant
    message may call tools (``tool_calls``, then ``content`` may be null) and a ``tool``
    message answers one call (``tool_call_id``)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls is only allowed on assistant messages")
        if (self.tool_call_id is None) != (self.role != "tool"):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        if self.content is None and not (self.role == "assistant" and (self.tool_calls or self.refusal)):
            raise ValueError("content is required (null only on an assistant message with tool_calls)")
        return self

    def text(self) -> str:
        """The contents as one text (text parts joined; '' for none)."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def uses_tools(self) -> bool:
        return self.role == "tool" or bool(self.tool_calls)

    def plain(self) -> dict[str, str]:
        """``{"role", "content"}`` with text parts joined (``developer`` is a system message)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}

    def wire(self) -> dict[str, Any]:
        """The message as forwarded: as sent, without null fields, ``developer`` as ``system``."""
        out = self.model_dump(exclude_none=True)
        if self.role == "developer":
            out["role"] = "system"
        return out


class StreamOptions(BaseModel):
    include_usage: bool = False


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions request. Every OpenAI parameter is recognized; see
    :mod:`core.chat_params` for what each backend honours."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_N, description=f"Choices to generate, at most {MAX_N}.")
    seed: int | None = None
    stop: str | list[str] | None = Field(default=None, description=f"Up to {MAX_STOP} sequences.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = Field(
        default=None, description="Token ids of the served model's tokenizer to a bias in [-100, 100]."
    )
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # Recognized, and refused by every backend unless neutral (core.chat_params.NEUTRAL).
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    service_tier: str | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: str | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP:
            raise ValueError(f"stop takes at most {MAX_STOP} sequences")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs to be true")
        for token, bias in (self.logit_bias or {}).items():
            if not (token.isascii() and token.isdigit()) or not -100 <= bias <= 100:
                raise ValueError("logit_bias maps token ids (integers) to a bias from -100 to 100")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> list[str]:
        """The stop sequences (empty ones dropped)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def forward_body(self, model: str, max_tokens: int, params: frozenset[str]) -> dict[str, Any]:
        """The body for a backend that honours ``params``: those the client set (null ones
        dropped), as sent; ``temperature``/``top_p`` default to OpenAI's 1."""
        body: dict[str, Any] = self.model_dump(
            include=set(params) - FORWARD_FIXED, exclude_none=True, exclude_unset=True, mode="json"
        )
        body.update(
            model=model,
            messages=[m.wire() for m in self.messages],
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stream=bool(self.stream),
        )
        if self.stream:
            body["stream_options"] = {"include_usage": bool(self.stream_options and self.stream_options.include_usage)}
        return body


# Parameters forward_body sets itself (the API has already checked or resolved them).
FORWARD_FIXED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream", "stream_options"}
)


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


def choice(index: int, text: str, finish_reason: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One choice of a ``chat.completion``; ``logprobs``: the per-token entries, or None."""
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
        "finish_reason": finish_reason,
    }


def completion(
    id_: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A ``chat.completion`` object (``choices`` from :func:`choice`)."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    id_: str,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage_: dict[str, int] | None = None,
    *,
    index: int = 0,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` for choice ``index``; ``delta=None`` is the usage-only
    chunk (no choices)."""
    choices = (
        []
        if delta is None
        else [
            {
                "index": index,
                "delta": delta,
                "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
                "finish_reason": finish_reason,
            }
        ]
    )
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
