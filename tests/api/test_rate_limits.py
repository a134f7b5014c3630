"""Per-organization limits on chat, uploads and job creation (small limits on a server of
their own; chat answered by the fake vLLM of :mod:`tests.serving.fake_vllm`): a chat request
over a size limit is 400 naming it before any backend sees it; the request and token budgets
answer 429 with ``Retry-After`` (uploads and job creations too) and the budget's ``x-ratelimit-*``
headers; every chat answer carries OpenAI's ``x-ratelimit-*`` headers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest

from tests.api.helpers import BASE_MODEL, GOOD
from tests.conftest import free_port
from tests.serving.fake_vllm import FakeVllm

FAKE_PORT = free_port()
MAX_MESSAGES, MAX_CHARS, MAX_PROMPT_TOKENS = 8, 1000, 260
TOKENS_PER_MINUTE, REQUESTS_PER_MINUTE = 1000, 20
UPLOADS_PER_MINUTE, JOBS_PER_MINUTE = 3, 2
API_ENV = {  # read by the in-process app
    "GUARDTUNE_INFERENCE_BACKEND": "vllm",
    "GUARDTUNE_INFERENCE_URL": f"http://127.0.0.1:{FAKE_PORT}",
    "GUARDTUNE_CHAT_MAX_MESSAGES": str(MAX_MESSAGES),
    "GUARDTUNE_CHAT_MAX_CHARS": str(MAX_CHARS),
    "GUARDTUNE_CHAT_MAX_PROMPT_TOKENS": str(MAX_PROMPT_TOKENS),
    "GUARDTUNE_CHAT_TOKENS_PER_MINUTE": str(TOKENS_PER_MINUTE),
    "GUARDTUNE_CHAT_REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE),
    "GUARDTUNE_UPLOADS_PER_MINUTE": str(UPLOADS_PER_MINUTE),
    "GUARDTUNE_JOB_CREATIONS_PER_MINUTE": str(JOBS_PER_MINUTE),
}
RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s)$")


@pytest.fixture(scope="module", autouse=True)
def fake_vllm() -> Iterator[FakeVllm]:
    with FakeVllm(BASE_MODEL, port=FAKE_PORT) as fake:
        yield fake


def ask(client: openai.OpenAI, messages: list[dict], max_tokens: int = 100):
    return client.chat.completions.with_raw_response.create(model=BASE_MODEL, messages=messages, max_tokens=max_tokens)


def hi() -> list[dict]:
    return [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("messages", "setting"),
    [
        pytest.param(
            [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1), "GUARDTUNE_CHAT_MAX_MESSAGES", id="messages"
        ),
        pytest.param([{"role": "user", "content": "x" * (MAX_CHARS + 1)}], "GUARDTUNE_CHAT_MAX_CHARS", id="chars"),
        pytest.param(
            [{"role": "user", "content": "x" * 120}] * MAX_MESSAGES, "GUARDTUNE_CHAT_MAX_PROMPT_TOKENS", id="tokens"
        ),
    ],
)
def test_a_conversation_over_a_size_limit_is_400_naming_it(sdk, tenant, fake_vllm, messages, setting):
    forwarded = len(fake_vllm.requests)
    with pytest.raises(openai.BadRequestError) as err:
        ask(sdk(tenant), messages)
    assert err.value.body["param"] == "messages"
    assert err.value.body["code"] == "prompt_too_large"
    assert setting in err.value.body["message"]
    assert len(fake_vllm.requests) == forwarded


def test_answers_carry_the_budgets_and_the_token_budget_is_429(sdk, new_tenant):
    client = sdk(new_tenant())
    cost = 1 + 4 + 100  # "hi": 1 estimated token, 4 per message, max_tokens 100
    first = ask(client, hi())
    assert first.headers["x-ratelimit-limit-tokens"] == str(TOKENS_PER_MINUTE)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(TOKENS_PER_MINUTE - cost)
    assert first.headers["x-ratelimit-limit-requests"] == str(REQUESTS_PER_MINUTE)
    assert first.headers["x-ratelimit-remaining-requests"] == str(REQUESTS_PER_MINUTE - 1)
    assert RESET.match(first.headers["x-ratelimit-reset-tokens"])
    assert RESET.match(first.headers["x-ratelimit-reset-requests"])
    assert first.parse().choices[0].message.content == "base says hi"
    for _ in range(TOKENS_PER_MINUTE // cost - 1):
        ask(client, hi())
    with pytest.raises(openai.RateLimitError) as err:
        ask(client, hi())
    assert err.value.body["code"] == "rate_limit_exceeded"
    assert "tokens" in err.value.body["message"]
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    assert int(err.value.response.headers["x-ratelimit-remaining-tokens"]) < cost
    small = ask(client, hi(), max_tokens=1)  # what is left of the budget still serves a smaller request
    assert small.headers["x-ratelimit-remaining-requests"] == str(REQUESTS_PER_MINUTE - TOKENS_PER_MINUTE // cost - 1)


def test_the_request_budget_is_429_and_other_organizations_keep_theirs(sdk, new_tenant):
    client, other = sdk(new_tenant()), sdk(new_tenant())
    for _ in range(REQUESTS_PER_MINUTE):
        ask(client, hi(), max_tokens=1)
    with pytest.raises(openai.RateLimitError) as err:
        ask(client, hi(), max_tokens=1)
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    assert ask(other, hi(), max_tokens=1).headers["x-ratelimit-remaining-requests"] == str(REQUESTS_PER_MINUTE - 1)


def assert_request_budget_spent(error: openai.RateLimitError, limit: int) -> None:
    """``error`` is the 429 of a spent request budget of ``limit`` a minute, in OpenAI's shape."""
    assert error.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["x-ratelimit-limit-requests"] == str(limit)
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(error.response.headers["x-ratelimit-reset-requests"])


def test_uploads_over_the_rate_are_429_and_nothing_stored(sdk, new_tenant, unchanged):
    tenant = new_tenant()
    client = sdk(tenant)
    for _ in range(UPLOADS_PER_MINUTE):
        client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    with unchanged(tenant), pytest.raises(openai.RateLimitError) as err:
        client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    assert_request_budget_spent(err.value, UPLOADS_PER_MINUTE)
    with unchanged(tenant), pytest.raises(openai.RateLimitError) as err:  # the Uploads API shares the budget
        client.uploads.create(bytes=len(GOOD), filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune")
    assert_request_budget_spent(err.value, UPLOADS_PER_MINUTE)


def test_job_creations_over_the_rate_are_429_and_nothing_created(sdk, new_tenant, unchanged):
    tenant = new_tenant()
    client = sdk(tenant)
    training_file = client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune").id
    for _ in range(JOBS_PER_MINUTE):
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file)
    with unchanged(tenant), pytest.raises(openai.RateLimitError) as err:
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file)
    assert_request_budget_spent(err.value, JOBS_PER_MINUTE)
