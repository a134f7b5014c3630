"""The embedded backend's chat parameters through the ``openai`` SDK on the real stack (the
API under uvicorn, Postgres, Redis, S3 and ``guardtune infer`` on the tiny base model):
``stop``, ``n``, ``logprobs``/``top_logprobs``, the penalties and ``logit_bias`` are
honoured, streamed too; what it cannot honour is 400 ``unsupported_parameter`` naming the
parameter, and an argument OpenAI does not define is 400 ``unknown_parameter``."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_api, stop_process
from tests.serving.conftest import start_infer
from tests.worker.conftest import small_pipeline_env

STORY = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture(scope="module")
def stack(deployment_env, tiny_model, tmp_path_factory, make_key):
    """(an SDK client of the API, the URL of the ``guardtune infer`` behind it)."""
    logs = tmp_path_factory.mktemp("chat-params")
    env = {**deployment_env, **small_pipeline_env(tiny_model)}
    infer, env = start_infer(env, logs / "infer.log")
    api = start_api(env, logs / "api.log")
    _, _, key = make_key(f"chat-params-{time.monotonic_ns()}")
    yield OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0, timeout=120), infer.base_url
    for process in (api.process, infer.process):
        stop_process(process)


@pytest.fixture
def client(stack):
    return stack[0]


def ask(client: OpenAI, **kwargs):
    return client.chat.completions.create(model="tiny", messages=STORY, temperature=0, **kwargs)


def test_stop_n_and_logprobs(client):
    plain = ask(client, max_tokens=12).choices[0].message.content
    stop = plain.split()[2]
    answer = ask(client, max_tokens=12, stop=[stop], n=2, logprobs=True, top_logprobs=2)
    assert [c.index for c in answer.choices] == [0, 1]
    for c in answer.choices:
        assert c.message.content == plain[: plain.index(stop)].strip()
        assert c.finish_reason == "stop"
        assert len(c.logprobs.content[0].top_logprobs) == 2
        assert c.logprobs.content[0].top_logprobs[0].token == c.logprobs.content[0].token
    assert answer.usage.completion_tokens == 2 * len(answer.choices[0].logprobs.content)


def test_streamed_choices_carry_their_index_and_logprobs(client):
    full = ask(client, max_tokens=6, n=2, logprobs=True)
    chunks = list(ask(client, max_tokens=6, n=2, logprobs=True, stream=True))
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert "".join(c.delta.content or "" for c in mine) == full.choices[index].message.content
        tokens = [e.token for c in mine if c.logprobs for e in c.logprobs.content]
        assert tokens == [e.token for e in full.choices[index].logprobs.content]
        assert mine[-1].finish_reason == "length"


def test_penalties_and_logit_bias_change_the_answer(client, tiny_model):
    plain = ask(client, max_tokens=16, logprobs=True).choices[0]
    tokens = [e.token for e in plain.logprobs.content]
    assert len(set(tokens)) < len(tokens)  # the tiny model repeats itself
    for kwargs in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        penalized = [e.token for e in ask(client, max_tokens=16, logprobs=True, **kwargs).choices[0].logprobs.content]
        assert len(set(penalized)) == len(penalized), kwargs
    from transformers import AutoTokenizer

    bread = AutoTokenizer.from_pretrained(tiny_model).encode(" bread", add_special_tokens=False)
    forced = ask(client, max_tokens=3, logit_bias={str(bread[0]): 100})
    assert forced.choices[0].message.content == "bread bread bread"
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, max_tokens=3, logit_bias={"99999999": 5})
    assert err.value.body["param"] == "logit_bias"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"store": True}, "store"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "1"},
                ]
            },
            "messages.[1].tool_calls",
        ),
    ],
)
def test_what_it_cannot_honour_is_400(client, kwargs, param):
    kwargs = {"model": "tiny", "messages": STORY, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**kwargs)
    assert err.value.body["code"] == "unsupported_parameter"
    assert err.value.body["param"] == param


def test_unknown_argument_is_400_and_neutral_values_are_served(client):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, max_tokens=2, extra_body={"top_k": 5})
    assert err.value.body["code"] == "unknown_parameter"
    assert err.value.body["param"] == "top_k"
    served = ask(client, max_tokens=2, response_format={"type": "text"}, store=False, user="u", logprobs=False)
    assert served.choices[0].message.content


def test_the_infer_process_refuses_on_its_own_too(stack, tiny_model):
    """A request that reaches ``guardtune infer`` without the API's check is refused alike."""
    _, infer_url = stack
    body = {"model": "tiny", "messages": STORY, "max_tokens": 2, "guardtune": {"base": str(tiny_model)}}
    tools = [{"type": "function", "function": {"name": "f"}}]
    refused = httpx.post(f"{infer_url}/v1/chat/completions", json={**body, "tools": tools}, timeout=60)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unsupported_parameter"
    assert refused.json()["error"]["param"] == "tools"
    unknown = httpx.post(f"{infer_url}/v1/chat/completions", json={**body, "top_k": 3}, timeout=60)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_parameter"
    served = httpx.post(f"{infer_url}/v1/chat/completions", json=body, timeout=60)
    assert served.json()["choices"][0]["message"]["content"]
