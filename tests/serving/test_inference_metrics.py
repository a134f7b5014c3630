"""``guardtune infer``'s ``GET /metrics`` (the app in this process on the tiny model): a
completion, streamed or not, moves its latency, batch size and generated tokens."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.conftest import metric_value


def test_completions_move_the_inference_metrics(embedded_env, tiny_model):
    import api.metrics  # noqa: F401  (imported in this process, its collectors must stay the API's)
    from worker.inference_server import create_app

    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 3,
        "temperature": 0,
        "guardtune": {"base": str(tiny_model)},
    }
    with TestClient(create_app()) as infer:
        before = infer.get("/metrics").text
        plain = infer.post("/v1/chat/completions", json=body)
        assert plain.status_code == 200, plain.text
        streamed = infer.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200
        after = infer.get("/metrics").text
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert chunks
    generated = plain.json()["usage"]["completion_tokens"]
    assert generated > 0
    for stream in ("false", "true"):
        assert metric_value(after, "guardtune_inference_seconds_count", stream=stream) == (
            metric_value(before, "guardtune_inference_seconds_count", stream=stream) + 1
        )
    assert (
        metric_value(after, "guardtune_inference_batch_size_count")
        == metric_value(before, "guardtune_inference_batch_size_count") + 2
    )
    assert (
        metric_value(after, "guardtune_inference_batch_size_sum")
        == metric_value(before, "guardtune_inference_batch_size_sum") + 2
    )
    tokens = metric_value(after, "guardtune_inference_completion_tokens_total") - metric_value(
        before, "guardtune_inference_completion_tokens_total"
    )
    assert tokens == 2 * generated  # greedy: the streamed answer is the same
