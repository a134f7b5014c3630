"""Preference (DPO) files and jobs on the wire: OpenAI's preference JSONL validated at upload
with line numbers, ``method: dpo`` with its ``beta`` resolved and echoed, and a file refused
by a job whose method cannot train its format."""

from __future__ import annotations

import openai
import pytest

from core.datasets import validate_chunks
from tests.api.helpers import BASE_MODEL, GOOD, chat, jsonl


def pair(prompt: str = "What is 2+2?", preferred: str = "4.", rejected: str = "5.", **extra) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": prompt}], **extra},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


PAIRS = jsonl(pair(), pair("Capital of France?", "Paris.", "Rome."), pair("Hi", "Hello!", "Go away."))
ONE_ASSISTANT = "must be a list of exactly one assistant message."


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({**pair(), "input": {"messages": []}}, "'input' must be an object with a non-empty 'messages' list."),
        ({**pair(), "input": "hi"}, "'input' must be an object with a non-empty 'messages' list."),
        (
            {**pair(), "input": {"messages": [{"role": "user", "content": "q"}], "colour": 1}},
            "Unrecognized key 'colour' in 'input'.",
        ),
        (
            {**pair(), "input": {"messages": [{"role": "human", "content": "q"}]}},
            "input.messages[0].role is 'human'; it must be one of system, user, assistant, tool.",
        ),
        (
            {
                **pair(),
                "input": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            },
            "input.messages must end with a user (or tool) message for the outputs to answer.",
        ),
        ({**pair(), "preferred_output": []}, f"'preferred_output' {ONE_ASSISTANT}"),
        (
            {**pair(), "non_preferred_output": {"role": "assistant", "content": "x"}},
            f"'non_preferred_output' {ONE_ASSISTANT}",
        ),
        (
            {**pair(), "preferred_output": [{"role": "user", "content": "x"}]},
            "preferred_output[0] must be an assistant message with content or tool calls to train on.",
        ),
        (
            {**pair(), "non_preferred_output": [{"role": "assistant", "content": 3}]},
            "non_preferred_output[0].content must be a string (a number).",
        ),
        ({**pair(), "score": 1}, "Unrecognized key 'score' in a preference example."),
        (
            {**pair(), "input": {"messages": [{"role": "user", "content": "q"}], "tools": [{}]}},
            "tools[0] must be an object with type 'function'.",
        ),
    ],
)
def test_refused_pairs_name_their_problem(example, message):
    report = validate_chunks([jsonl(pair(), example)])
    assert [str(i) for i in report.errors] == [f"line 2: {message}"]


def test_a_file_is_one_format_and_pairs_with_tools_are_accepted():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    report = validate_chunks([jsonl(pair(tools=tools), pair())])
    assert report.ok and report.format == "preference" and report.n_examples == 2
    mixed = validate_chunks([jsonl(pair(), chat())])
    assert [i.line for i in mixed.errors] == [2]
    assert "uses the chat (messages) format but earlier lines use the preference" in mixed.errors[0].message


def test_an_invalid_preference_upload_lists_its_lines(client):
    bad = jsonl(pair(), {**pair(), "preferred_output": []}, "{oops", pair())
    f = client.files.create(file=("prefs.jsonl", bad), purpose="fine-tune")
    assert f.status == "error"
    assert f"line 2: 'preferred_output' {ONE_ASSISTANT}" in f.status_details
    assert "line 3: Invalid JSON" in f.status_details
    assert "line 1" not in f.status_details and "line 4" not in f.status_details


def test_a_dpo_job_resolves_and_echoes_its_hyperparameters(client):
    f = client.files.create(file=("prefs.jsonl", PAIRS), purpose="fine-tune")
    assert f.status == "processed"
    job = client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=f.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": "auto"}}},
    )
    assert job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.model_dump() == {
        "beta": 0.1,
        "n_epochs": 2,
        "batch_size": 3,  # "auto": the whole file when under 8 pairs
        "learning_rate_multiplier": 1.0,
    }
    assert job.hyperparameters.model_dump() == {"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": 1.0}
    assert job.model_extra["safety"]["reference"] == "exact"  # DPO's own term needs the reference's whole answers
    explicit = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=f.id, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5}}}
    )
    assert explicit.method.dpo.hyperparameters.beta == 0.5
    plain = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, method={"type": "dpo"})
    assert plain.method.dpo.hyperparameters.beta == 0.1
    for created in (job, explicit, plain):
        client.fine_tuning.jobs.cancel(created.id)


@pytest.mark.parametrize(
    ("method", "content", "param", "says"),
    [
        (
            {"type": "dpo"},
            GOOD,
            "training_file",
            "The dpo method trains on preference files; this file is in the chat format.",
        ),
        (None, PAIRS, "training_file", "The supervised method trains on chat or prompt_completion files"),
        (
            {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}},
            PAIRS,
            "method.dpo.hyperparameters.beta",
            "'auto' or a number > 0",
        ),
        ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}, PAIRS, "method.dpo.hyperparameters.beta", "<= 2"),
        ({"type": "reinforcement"}, PAIRS, "method.type", "use 'supervised' or 'dpo'"),
    ],
)
def test_a_job_refuses_a_file_its_method_cannot_train(client, tenant, unchanged, method, content, param, says):
    f = client.files.create(file=("t.jsonl", content), purpose="fine-tune")
    body = {"model": BASE_MODEL, "training_file": f.id, **({"method": method} if method else {})}
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.post("/fine_tuning/jobs", body=body, cast_to=dict)
    assert err.value.param == param, err.value.message
    assert says in err.value.message
    if param == "training_file":
        assert err.value.code == "invalid_training_file"


def test_a_dpo_validation_file_must_hold_pairs_too(client):
    train = client.files.create(file=("t.jsonl", PAIRS), purpose="fine-tune")
    valid = client.files.create(file=("v.jsonl", GOOD), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=train.id, validation_file=valid.id, method={"type": "dpo"}
        )
    assert (err.value.param, err.value.code) == ("validation_file", "invalid_validation_file")
    assert f"File {valid.id}: The dpo method trains on preference files" in err.value.message
