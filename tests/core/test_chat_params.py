"""Which chat parameters count as set and which backend honours them (core/chat_params.py),
on parsed requests: null, false, empty and neutral values ask for nothing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.chat import ChatCompletionRequest
from core.chat_params import forwarded, unknown_parameter, unsupported_parameter

HI = [{"role": "user", "content": "hi"}]


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": HI, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"store": False, "metadata": {}, "modalities": ["text"], "service_tier": "auto"},
        {"tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "logprobs": False},
        {"stop": ["x"], "n": 2, "logit_bias": {"5": -3}, "presence_penalty": 0.5, "user": "u"},
    ],
)
def test_what_both_backends_serve(fields):
    for backend in ("embedded", "vllm"):
        assert unsupported_parameter(request(**fields), backend) is None, backend


def test_tools_and_formats_are_vllm_only():
    tools = request(tools=[{"type": "function", "function": {"name": "f"}}], response_format={"type": "json_object"})
    assert unsupported_parameter(tools, "vllm") is None
    assert unsupported_parameter(tools, "embedded") == "tools"
    assert unsupported_parameter(request(response_format={"type": "json_object"}), "embedded") == "response_format"
    assert unsupported_parameter(request(tool_choice="auto"), "embedded") == "tool_choice"
    assert unsupported_parameter(request(store=True), "vllm") == "store"


def test_unknown_arguments_and_identifiers_that_are_never_forwarded():
    assert unknown_parameter(request(top_k=5)) == "top_k"
    assert unknown_parameter(request(seed=1)) is None
    body = request(safety_identifier="s", prompt_cache_key="k", user="u").forward_body("m", 8, forwarded("vllm"))
    assert set(body) == {"model", "messages", "max_tokens", "temperature", "top_p", "stream", "user"}


@pytest.mark.parametrize(
    "fields",
    [
        {"stop": ["a", "b", "c", "d", "e"]},
        {"top_logprobs": 2},
        {"logit_bias": {"²": 1}},
        {"logit_bias": {"7": 101}},
        {"n": 9},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": None}]},
    ],
)
def test_malformed_parameters_are_refused(fields):
    with pytest.raises(ValidationError):
        request(**fields)
