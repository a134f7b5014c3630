"""Which chat-completions parameters each inference backend honours.

Every parameter of OpenAI's request is recognized (:class:`core.chat.ChatCompletionRequest`);
a request that sets one its backend cannot honour is refused with 400
``unsupported_parameter`` naming it (``param``), never served as if it had not been sent.
A parameter counts as set when its value is neither null, ``false``, empty nor one of its
:data:`NEUTRAL` values (``modalities: ["text"]``, ``service_tier: "auto"``…), which ask for
nothing beyond a plain text answer.

* ``vllm`` honours what vLLM's OpenAI server implements: they are forwarded unchanged,
  and vLLM's answer (``logprobs``, ``tool_calls``, ``finish_reason: "tool_calls"``…) is
  relayed unchanged.
* ``embedded`` (``guardtune infer``) honours sampling (``temperature``, ``top_p``,
  ``seed``), ``n``, ``stop``, ``logprobs``/``top_logprobs``, ``presence_penalty``,
  ``frequency_penalty`` and ``logit_bias``; ``response_format`` only as ``text``; no tools,
  neither in the request nor as tool calls or tool messages in the conversation.
* Identifiers and caching hints that do not change the answer (``user``,
  ``safety_identifier``, ``prompt_cache_key``) are accepted by both and not forwarded
  (``user`` is forwarded to vLLM, which accepts it).
"""

from __future__ import annotations

from typing import Any, Literal

from core.chat import ChatCompletionRequest

BackendKind = Literal["embedded", "vllm"]

# Accepted by every backend; the first group is what the API resolves itself.
COMMON = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options"}
    | {"temperature", "top_p", "seed", "n", "stop", "logprobs", "top_logprobs"}
    | {"presence_penalty", "frequency_penalty", "logit_bias", "response_format", "user"}
    | {"safety_identifier", "prompt_cache_key"}
)
NOT_FORWARDED = frozenset({"safety_identifier", "prompt_cache_key"})
VLLM = COMMON | {"tools", "tool_choice", "parallel_tool_calls", "reasoning_effort"}
EMBEDDED = COMMON

NEUTRAL: dict[str, tuple[Any, ...]] = {
    "modalities": (["text"],),
    "service_tier": ("auto", "default"),
    "tool_choice": ("none",),
}


def _set_parameters(request: ChatCompletionRequest) -> list[str]:
    """The parameters ``request`` sets, in the request model's field order."""
    out = []
    for name in type(request).model_fields:
        value = getattr(request, name)
        if value is None or value is False or value in ([], {}) or value in NEUTRAL.get(name, ()):
            continue
        out.append(name)
    return out


def unknown_parameter(request: ChatCompletionRequest) -> str | None:
    """The first argument OpenAI does not define, if any."""
    return next(iter(request.model_extra or {}), None)


def unsupported_parameter(request: ChatCompletionRequest, backend: BackendKind) -> str | None:
    """The first parameter ``request`` sets that ``backend`` cannot honour (its ``param``
    path), or None."""
    honoured = VLLM if backend == "vllm" else EMBEDDED
    for name in _set_parameters(request):
        if name not in honoured and name != "guardtune":
            return name
    if backend == "embedded":
        if request.response_format is not None and request.response_format.type != "text":
            return "response_format"
        for i, message in enumerate(request.messages):
            if message.uses_tools():
                return f"messages.[{i}].{'tool_calls' if message.tool_calls else 'role'}"
    return None


def forwarded(backend: BackendKind) -> frozenset[str]:
    """The parameters forwarded to ``backend`` when set."""
    return (VLLM if backend == "vllm" else EMBEDDED) - NOT_FORWARDED
