"""The embedded engine's per-request decoding controls on the tiny model, in process: stop
sequences (streamed deltas never show one), ``n`` choices, log-probabilities, penalties and
logit bias, each row of one batch with its own."""

from __future__ import annotations

import pytest

from safety.base_models import load_base_model
from safety.decoding import RowSettings
from safety.inference import ChatRequest, Engine

STORY = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture(scope="module")
def engine(tiny_model, tmp_path_factory):
    cache = tmp_path_factory.mktemp("decoding")
    return Engine(lambda s: load_base_model(str(tiny_model), cache_dir=cache), batch_wait_s=0.2)


def submit(engine: Engine, **kwargs) -> ChatRequest:
    request = ChatRequest(messages=STORY, base="tiny", temperature=0, **kwargs)
    engine.submit(request)
    return request


def result(request: ChatRequest):
    deltas = []
    while (event := request.events.get(timeout=120))[0] == "delta":
        deltas.append(event[1])
    return deltas, event


def ask(engine: Engine, **kwargs):
    deltas, (kind, done) = result(submit(engine, **kwargs))
    assert kind == "done", done
    return deltas, done


def test_stop_sequence_cuts_the_answer_and_is_never_streamed(engine):
    _, plain = ask(engine, max_tokens=12)
    text = plain.choices[0].text
    stop = text.split()[2]
    deltas, done = ask(engine, max_tokens=12, stop=["never-in-the-answer", stop])
    choice = done.choices[0]
    assert choice.text == text[: text.index(stop)].strip()
    assert choice.finish_reason == "stop"
    assert "".join(d.text for d in deltas) == choice.text
    assert choice.completion_tokens < plain.choices[0].completion_tokens


def test_n_choices_are_rows_of_one_batch(engine):
    before = len(engine.batches)
    deltas, done = ask(engine, max_tokens=5, n=3)
    assert len(done.choices) == 3
    assert len({c.text for c in done.choices}) == 1  # greedy: the same answer thrice
    assert done.completion_tokens == sum(c.completion_tokens for c in done.choices)
    assert engine.batches[before:] == [3]
    for index, choice in enumerate(done.choices):
        assert "".join(d.text for d in deltas if d.index == index) == choice.text


def test_logprobs_name_each_chosen_token_and_the_most_likely_ones(engine):
    _, done = ask(engine, max_tokens=6, decoding=RowSettings(logprobs=True, top_logprobs=3))
    choice = done.choices[0]
    assert len(choice.logprobs) == choice.completion_tokens
    assert "".join(e["token"] for e in choice.logprobs).strip() == choice.text
    for entry in choice.logprobs:
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy picks the most likely
        assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]
        assert entry["logprob"] < 0
        assert bytes(entry["bytes"]).decode() == entry["token"]


def test_penalties_stop_repetition(engine):
    settings = RowSettings(logprobs=True)
    plain = submit(engine, max_tokens=16, decoding=settings)
    frequency = submit(engine, max_tokens=16, decoding=RowSettings(frequency_penalty=2.0, logprobs=True))
    presence = submit(engine, max_tokens=16, decoding=RowSettings(presence_penalty=2.0, logprobs=True))
    tokens = {}
    for name, request in (("plain", plain), ("frequency", frequency), ("presence", presence)):
        _, (kind, done) = result(request)
        assert kind == "done"
        tokens[name] = [e["token"] for e in done.choices[0].logprobs]
    assert len(set(tokens["plain"])) < len(tokens["plain"])  # the tiny model repeats itself
    assert len(set(tokens["frequency"])) == len(tokens["frequency"])
    assert len(set(tokens["presence"])) == len(tokens["presence"])


def test_logit_bias_forces_and_forbids_tokens(engine, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    _, plain = ask(engine, max_tokens=4, decoding=RowSettings(logprobs=True))
    first = plain.choices[0].logprobs[0]["token"]
    first_id = tokenizer.encode(first, add_special_tokens=False)[0]
    _, banned = ask(engine, max_tokens=4, decoding=RowSettings(logit_bias={first_id: -100}, logprobs=True))
    assert banned.choices[0].logprobs[0]["token"] != first
    forced_id = tokenizer.encode(" bread", add_special_tokens=False)[0]
    _, forced = ask(engine, max_tokens=4, decoding=RowSettings(logit_bias={forced_id: 100}))
    assert forced.choices[0].text == "bread bread bread bread"
    kind, detail = result(submit(engine, max_tokens=4, decoding=RowSettings(logit_bias={10**7: 5})))[1]
    assert kind == "invalid"
    assert detail[0] == "logit_bias"
