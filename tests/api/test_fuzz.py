"""Property-based fuzzing of the whole OpenAPI schema with schemathesis, against the real
server (uvicorn, Postgres, Redis, S3): whatever a client sends, valid by the schema or not,
the answer is never a 5xx, and every error is OpenAI's error object. Bounded: a fixed
number of derandomized requests per operation and mode, so CI time stays the same."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import FlakyFailure, Unsatisfiable
from schemathesis import GenerationMode

from tests.api.helpers import auth

pytestmark = pytest.mark.slow  # long fuzzing of every operation on the real server

EXAMPLES = 25  # per operation and generation mode


@pytest.fixture(scope="module")
def admin(new_tenant):
    return new_tenant("admin")


def check(case, response) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        error = response.json().get("error")
        assert isinstance(error, dict), where
        assert set(error) == {"message", "type", "param", "code"}, where
        assert isinstance(error["message"], str), where
        assert error["message"], where
        assert isinstance(error["type"], str), where
        assert error["type"], where


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_gets_a_server_error(live_api, tenant, admin, mode):
    """A valid key of the right scope on every request, so it gets past authentication."""
    schema = schemathesis.openapi.from_url(f"{live_api.base_url}/openapi.json")
    failures, fuzzed = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        who = admin if operation.path.startswith("/v1/admin") else tenant

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            check(case, case.call(headers=auth(who), timeout=30))  # noqa: B023 (run within this iteration)

        try:
            fuzz()
            fuzzed += 1
        except Unsatisfiable:
            continue  # nothing invalid to send (an operation without parameters or body)
        except (AssertionError, FlakyFailure) as exc:  # flaky: failed once, not on replay
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
            fuzzed += 1
    assert fuzzed >= 15, f"only {fuzzed} operations were fuzzed"
    assert not failures, "\n\n".join(failures)
