"""The vLLM backend against a real HTTP server speaking vLLM's LoRA and chat endpoints
(:mod:`tests.serving.fake_vllm`): release places the adapter in the shared directory and
registers it, requests are forwarded under the ``ft:`` name, a vLLM that lost the adapter
gets it again, and revocation unloads it."""

from __future__ import annotations

import io
import time

import openai
import pytest
from openai import OpenAI

from core.db import session_scope
from core.releases.digests import dir_sha256
from tests.conftest import apply_env, start_api, stop_process
from tests.serving.fake_vllm import FakeVllm
from tests.worker.conftest import ADAPTER, create_job, store_adapter

VLLM_KEY = "vllm-test-key"  # vLLM started with --api-key: every call of guardtune's must carry it


@pytest.fixture(scope="module")
def vllm_stack(deployment_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm")
    with FakeVllm("smollm2-135m-instruct", api_key=VLLM_KEY) as fake:
        env = {
            **deployment_env,
            "GUARDTUNE_INFERENCE_BACKEND": "vllm",
            "GUARDTUNE_INFERENCE_URL": fake.url,
            "GUARDTUNE_INFERENCE_API_KEY": VLLM_KEY,
            "GUARDTUNE_VLLM_ADAPTER_DIR": str(tmp / "adapters"),
        }
        api = start_api(env, tmp / "api.log")
        yield env, api, fake
        stop_process(api.process)


def release_fake_adapter(org_id: str) -> str:
    """A job with stored adapter files approved by the gate, released by the pipeline's release stage."""
    from core.models import Job, SafetyReport
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(
            session, org_id, b'{"messages": []}\n', model="smollm2-135m-instruct", status="running", suffix="v"
        )
    digest = store_adapter(org_id, job_id)
    with session_scope() as session:
        session.add(SafetyReport(job_id=job_id, gate={"released": True, "reasons": [], "adapter_sha256": digest}))
    assert run_stage("release", job_id) is None
    with session_scope() as session:
        return session.get(Job, job_id).fine_tuned_model


def test_release_load_forward_reload_and_revoke(vllm_stack, make_key, monkeypatch):
    env, api, fake = vllm_stack
    apply_env(monkeypatch, env)
    org_id, _, key = make_key(f"vllm-{time.monotonic_ns()}")
    model = release_fake_adapter(org_id)
    # Release placed the files where vLLM reads them and registered them under the ft: name.
    path = fake.loras[model]
    assert path.startswith(env["GUARDTUNE_VLLM_ADAPTER_DIR"])
    with session_scope() as session:
        from core.models import ReleasedModel

        assert dir_sha256(path) == session.get(ReleasedModel, model).sha256

    client = OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    answer = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=8)
    assert answer.choices[0].message.content == f"{path.rsplit('/', 1)[1]} says hi"
    assert answer.model == model
    sent = fake.requests[-1]
    assert sent["model"] == model
    assert sent["max_tokens"] == 8
    assert sent["temperature"] == 0
    assert "guardtune" not in sent
    stream = client.chat.completions.create(model=model, messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer.choices[0].message.content
    base = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages)
    assert base.choices[0].message.content == "base says hi"

    fake.loras.clear()  # vLLM restarted and forgot its runtime adapters
    again = client.chat.completions.create(model=model, messages=messages)
    assert again.choices[0].message.content == answer.choices[0].message.content
    assert model in fake.loras

    from typer.testing import CliRunner

    from cli.ops import app as ops_cli

    result = CliRunner().invoke(ops_cli, ["release", "revoke", model, "--reason", "test"])
    assert result.exit_code == 0, result.output
    assert model not in fake.loras
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=messages)
    assert fake.refused == 0  # every call carried the key


def test_vllm_refuses_a_caller_without_its_key(vllm_stack):
    """The premise: the fake, like vLLM with --api-key, turns away a caller that lacks the key
    (who could otherwise register an adapter under any ft: name)."""
    import httpx

    _, _, fake = vllm_stack
    before = fake.refused
    response = httpx.post(f"{fake.url}/v1/load_lora_adapter", json={"lora_name": "ft:x", "lora_path": "/tmp"})
    assert response.status_code == 401
    assert fake.refused == before + 1
    assert "ft:x" not in fake.loras


def test_unreachable_backend_is_503(deployment_env, make_key, tmp_path):
    from tests.conftest import free_port

    env = {
        **deployment_env,
        "GUARDTUNE_INFERENCE_BACKEND": "vllm",
        "GUARDTUNE_INFERENCE_URL": f"http://127.0.0.1:{free_port()}",
    }
    api = start_api(env, tmp_path / "api.log")
    try:
        _, _, key = make_key(f"vllm-down-{time.monotonic_ns()}")
        client = OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 503
        assert err.value.body["code"] == "inference_unavailable"
    finally:
        stop_process(api.process)


def test_fetch_adapter_checks_the_digest(tmp_path):
    from core.chat import AdapterRef
    from core.inference import fetch_adapter
    from core.releases.digests import adapter_sha256
    from core.storage import make_store

    store = make_store(f"file://{tmp_path / 'objects'}")
    for name, data in ADAPTER.items():
        store.put_stream(f"p/{name}", io.BytesIO(data))
    good = AdapterRef(id="ft:x", storage_prefix="p", sha256=adapter_sha256(store, "p"))
    path = fetch_adapter(store, good, tmp_path / "cache")
    assert path == tmp_path / "cache" / good.sha256
    assert dir_sha256(path) == good.sha256
    bad = AdapterRef(id="ft:y", storage_prefix="p", sha256="0" * 64)
    with pytest.raises(ValueError, match="does not match"):
        fetch_adapter(store, bad, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [good.sha256]  # nothing half-written left


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_TURNS = [
    {"role": "developer", "content": "Use the tools."},
    {"role": "user", "content": "Weather in Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    {"role": "user", "content": "And in Paris?"},
]


def test_every_openai_parameter_vllm_supports_is_forwarded_unchanged(vllm_stack, make_key):
    _, api, fake = vllm_stack
    _, _, key = make_key(f"vllm-params-{time.monotonic_ns()}")
    client = OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
    schema = {"name": "weather", "schema": {"type": "object", "properties": {"sky": {"type": "string"}}}}
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=TOOL_TURNS,
        max_completion_tokens=20,
        temperature=0.7,
        top_p=0.9,
        n=2,
        seed=7,
        stop=["\n\n", "END"],
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        logit_bias={"42": -5, "7": 3},
        response_format={"type": "json_schema", "json_schema": schema},
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        reasoning_effort="low",
        user="end-user-1",
        safety_identifier="hashed-user",
        prompt_cache_key="cache-1",
    )
    assert fake.requests[-1] == {
        "model": "smollm2-135m-instruct",
        "messages": [
            {"role": "system", "content": "Use the tools."},
            *TOOL_TURNS[1:2],
            *[{k: v for k, v in turn.items() if v is not None} for turn in TOOL_TURNS[2:]],
        ],
        "max_tokens": 20,
        "temperature": 0.7,
        "top_p": 0.9,
        "n": 2,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "logit_bias": {"42": -5, "7": 3},
        "response_format": {"type": "json_schema", "json_schema": schema},
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "user": "end-user-1",
        "stream": False,
    }
    # vLLM's answer comes back unchanged: both choices, their tool calls and log-probabilities.
    assert [c.index for c in answer.choices] == [0, 1]
    first = answer.choices[0]
    assert first.finish_reason == "tool_calls"
    assert first.message.content is None
    assert first.message.tool_calls[0].function.name == "get_weather"
    assert first.message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert [e.token for e in first.logprobs.content] == ["base", "says", "hi"]


def test_parameters_vllm_lacks_and_unknown_ones_are_400(vllm_stack, make_key):
    _, api, fake = vllm_stack
    _, _, key = make_key(f"vllm-refused-{time.monotonic_ns()}")
    client = OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
    sent = len(fake.requests)
    messages = [{"role": "user", "content": "hi"}]
    for kwargs, param in (
        ({"store": True}, "store"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [WEATHER_TOOL["function"]]}, "functions"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, **kwargs)
        assert err.value.body["code"] == "unsupported_parameter"
        assert err.value.body["param"] == param
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, extra_body={"top_k": 5})
    assert err.value.body["code"] == "unknown_parameter"
    assert err.value.body["param"] == "top_k"
    # Neutral values ask for nothing more than a text answer: served.
    plain = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=messages, store=False, modalities=["text"], service_tier="auto"
    )
    assert plain.choices[0].message.content == "base says hi"
    assert len(fake.requests) == sent + 1
