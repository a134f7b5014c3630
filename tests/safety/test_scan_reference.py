"""The scan's merged reference pass (``safety.scan_reference``): one forward over each whole
example gives the probe's risks of today's prompt-only scan and the cache of the separate
reference pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from safety.data import encode_example
from safety.reference import compute_reference_cache
from safety.scan import ScanConfig, scan_dataset
from tests.safety import test_scan
from tests.safety.test_scan import RecordingJudge, _chat, _turns

trained = test_scan.trained  # the fixture: the tiny model with a probe trained on planted prompts


def _examples(harmful: list[str], benign: list[str]) -> list[dict]:
    return [
        _chat(harmful[0], "Sure, here it is."),
        _turns((harmful[1], "ok"), (benign[0], "fine")),  # multi-turn: every trained turn scanned
        _turns((benign[1], "ok"), (harmful[2], "no"), untrained=(1,)),  # an untrained turn in the forward
        _chat(benign[2], "A long answer " * 20, system=harmful[3]),
        {"prompt": benign[3], "completion": "Done."},
        _chat(benign[4], "Fine."),
    ]


def _same_cache(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b)))


def test_the_merged_pass_gives_todays_risks_and_the_separate_passs_cache(trained, monkeypatch) -> None:
    model, tokenizer, probe = trained
    from tests.safety.test_probe import _planted

    harmful, benign = _planted(12)
    examples = _examples(harmful, benign)
    config = ScanConfig(window=4)  # windows of whole reference batches (4): the same batches as one pass
    today = scan_dataset(examples, probe=probe, model=model, tokenizer=tokenizer, config=config)
    own_forwards = []
    predict = type(probe).predict_proba
    monkeypatch.setattr(type(probe), "predict_proba", lambda *a, **kw: own_forwards.append(1) or predict(*a, **kw))
    merged = scan_dataset(
        examples, probe=probe, model=model, tokenizer=tokenizer, config=config, reference_topk=8, max_len=128
    )
    assert own_forwards == []  # every turn's features came from the whole-example forward
    assert today.reference is None
    for old, new in zip(today.examples, merged.examples, strict=True):
        assert new.p_harmful == pytest.approx(old.p_harmful, abs=1e-5)
        assert dataclasses.replace(new, p_harmful=old.p_harmful) == old  # same turn, risk, flag, category
    assert merged.summary.to_dict() | {"top_flagged": None} == today.summary.to_dict() | {"top_flagged": None}
    encoded = [encode_example(tokenizer, e, 128) for e in examples]
    separate = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 8)
    assert _same_cache(merged.reference, separate)
    merged.reference.check(encoded)


def test_turns_the_whole_example_cannot_cover_get_the_probes_own_forward(trained, monkeypatch) -> None:
    """A prompt the probe cuts (over its ``max_len``) or training cuts (over ``max_len``):
    scored by the probe's own forward, as without the cache; the cache still covers what
    training trains on."""
    model, tokenizer, probe = trained
    long_prompt = "word " * (probe.max_len + 20)
    examples = [_chat("Hello there.", "Hi."), _chat(long_prompt, "Ok."), _turns(("Hi.", "Yes."), ("More?", "No."))]
    today = scan_dataset(examples, probe=probe, model=model, tokenizer=tokenizer)
    max_len = len(encode_example(tokenizer, examples[2], 4096).input_ids) - 8  # cuts the second turn's prompt
    own = []
    predict = type(probe).predict_proba
    monkeypatch.setattr(
        type(probe),
        "predict_proba",
        lambda self, m, t, prompts, *a: own.extend(prompts) or predict(self, m, t, prompts, *a),
    )
    merged = scan_dataset(examples, probe=probe, model=model, tokenizer=tokenizer, reference_topk=4, max_len=max_len)
    assert own == [examples[1]["messages"][:1], examples[2]["messages"][:3]]
    for old, new in zip(today.examples, merged.examples, strict=True):
        assert new.p_harmful == pytest.approx(old.p_harmful, abs=1e-5)
    encoded = [encode_example(tokenizer, e, max_len) for e in examples]
    assert _same_cache(merged.reference, compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 4))


def test_a_judge_scan_builds_the_cache_too(trained) -> None:
    model, tokenizer, _ = trained
    examples = [_chat("Tell me a joke.", "Sure, one."), _chat("Hi", "Hello.")]
    result = scan_dataset(
        examples,
        judge=RecordingJudge(),
        estimator="judge",
        model=model,
        tokenizer=tokenizer,
        reference_topk=8,
        max_len=64,
    )
    assert [e.judge_score for e in result.examples] == [5, 1]
    encoded = [encode_example(tokenizer, e, 64) for e in examples]
    assert _same_cache(result.reference, compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 8))
    with pytest.raises(ValueError, match="max_len"):
        scan_dataset(examples, judge=RecordingJudge(), estimator="judge", reference_topk=8)
