"""Dataset risk scan with the probe, a judge, and both."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from safety.base_models import load_base_model
from safety.judge import JudgeResult
from safety.objective import kl_weights
from safety.probe import Probe, ProbeConfig, Weighting, auroc, train_probe
from safety.scan import ScanConfig, guess_category, scan_dataset, trained_turns
from tests.safety.test_probe import _planted


class RecordingJudge:
    """Scores 5 when the response starts with "Sure", 1 otherwise; garbage for "???"."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[JudgeResult]:
        self.seen.extend(pairs)
        out = []
        for _, response in pairs:
            if response == "???":
                out.append(JudgeResult(score=5, parsed=False, raw=response))
            else:
                out.append(JudgeResult(score=5 if response.startswith("Sure") else 1, parsed=True, raw=""))
        return out


def _chat(user: str, assistant: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


@pytest.fixture(scope="module")
def trained(tiny_model: Path):
    model, tokenizer = load_base_model(str(tiny_model), cache_dir=tiny_model.parent)
    harmful, benign = _planted(60)
    probe, _ = train_probe(model, tokenizer, harmful, benign, ProbeConfig(layers=(1,), epochs=60))
    return model, tokenizer, probe


def test_trained_turns_formats() -> None:
    multi = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one."},
            {"role": "assistant", "content": "Green.", "weight": 1},
            {"role": "user", "content": "And a third?"},
            {"role": "assistant", "content": "Red.", "weight": 0},
        ]
    }
    first, second = trained_turns(multi)  # the weight-0 turn is not trained, so not scored
    assert (first.turn, first.response, first.context) == (
        1,
        "Blue.",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    )
    assert first.instruction == "System: Be brief.\n\nUser: Name a colour."
    assert (second.turn, second.response, len(second.context)) == (2, "Green.", 4)
    assert second.context[-1] == {"role": "user", "content": "Another one."}
    assert second.instruction == ("System: Be brief.\n\nUser: Name a colour.\n\nAssistant: Blue.\n\nUser: Another one.")
    (pc,) = trained_turns({"prompt": "Say hi.", "completion": "Hi!"})
    assert (pc.turn, pc.instruction, pc.response, pc.context) == (
        1,
        "Say hi.",
        "Hi!",
        [{"role": "user", "content": "Say hi."}],
    )
    bad = (
        {"messages": [{"role": "user", "content": "x"}]},
        {"text": "x"},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]},
    )
    for example in bad:
        with pytest.raises(ValueError):
            trained_turns(example)


def test_probe_scan_flags_planted_examples_and_streams(trained) -> None:
    model, tokenizer, probe = trained
    harmful, benign = _planted(8, seed=3)
    examples = [_chat(h, "ok") for h in harmful] + [{"prompt": b, "completion": "ok"} for b in benign]
    calls: list[int] = []
    result = scan_dataset(
        iter(examples),
        probe=probe,
        estimator="probe",
        model=model,
        tokenizer=tokenizer,
        batch_size=3,
        progress=calls.append,
        config=ScanConfig(window=5),
    )
    assert calls == [5, 10, 15, 16]
    s = result.summary
    assert s.n == 16
    assert [e.line for e in result.examples] == list(range(1, 17))
    assert sum(s.counts_by_score.values()) == 16
    assert set(s.counts_by_score) == {1, 2, 3, 4, 5}
    assert auroc([e.p_harmful for e in result.examples], [1] * 8 + [0] * 8) > 0.9
    # binary risk by default: 5 at or above the probe's threshold, else 1; flagged = risk 5
    for e in result.examples:
        assert e.risk == (5.0 if e.p_harmful >= probe.threshold else 1.0)
        assert e.flagged == (e.risk == 5.0)
    assert s.n_flagged == sum(e.flagged for e in result.examples)
    assert s.counts_by_score[5] == s.n_flagged
    assert s.flagged_fraction == s.n_flagged / 16
    assert all(e.judge_score is None and e.p_harmful is not None for e in result.examples)
    assert s.mean_risk == pytest.approx(sum(e.risk for e in result.examples) / 16)
    # the probe saw the prompt up to the assistant turn: same p as probing the user turn
    direct = probe.predict_proba(model, tokenizer, [harmful[0]])[0]
    assert result.examples[0].p_harmful == pytest.approx(direct, abs=1e-6)


def _turns(*pairs: tuple[str, str], system: str | None = None, untrained: tuple[int, ...] = ()) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    for n, (user, assistant) in enumerate(pairs, start=1):
        messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant, **({"weight": 0} if n in untrained else {})},
        ]
    return {"messages": messages}


def _clear_cases(model, tokenizer, probe, seed: int) -> tuple[list[str], list[str]]:
    """Planted prompts the fixture's probe gets right on their own, most confident first."""
    harmful, benign = _planted(20, seed=seed)
    p = probe.predict_proba(model, tokenizer, harmful + benign)
    hits = sorted((-pi, t) for pi, t in zip(p, harmful) if pi >= probe.threshold)
    passes = sorted((pi, t) for pi, t in zip(p[20:], benign) if pi < probe.threshold)
    return [t for _, t in hits], [t for _, t in passes]


def test_every_trained_turn_is_scored_and_the_riskiest_counts(trained) -> None:
    model, tokenizer, probe = trained
    harmful, benign = _clear_cases(model, tokenizer, probe, seed=6)
    examples = [
        _turns((harmful[0], "ok"), (benign[0], "ok")),  # harmful earlier turn, benign last turn
        _turns((benign[0], "ok"), (benign[1], "ok")),
        _turns((harmful[0], "ok"), (benign[0], "ok"), untrained=(1,)),  # the harmful turn is not trained
    ]
    result = scan_dataset(examples, probe=probe, model=model, tokenizer=tokenizer, config=ScanConfig(window=2))
    user = lambda t: {"role": "user", "content": t}  # noqa: E731
    asst = {"role": "assistant", "content": "ok"}
    p_first, p_after, p_benign, p_benign2 = probe.predict_proba(
        model,
        tokenizer,
        [
            [user(harmful[0])],
            [user(harmful[0]), asst, user(benign[0])],
            [user(benign[0])],
            [user(benign[0]), asst, user(benign[1])],
        ],
    )
    assert p_first >= probe.threshold > max(p_benign, p_benign2)  # the fixture's probe tells them apart
    hit, clean, skipped = result.examples
    assert (hit.line, hit.turn, hit.risk, hit.flagged) == (1, 1, 5.0, True)
    assert hit.p_harmful == pytest.approx(max(p_first, p_after), abs=1e-6)
    assert (clean.risk, clean.flagged) == (1.0, False)
    assert clean.p_harmful == pytest.approx(max(p_benign, p_benign2), abs=1e-6)
    assert skipped.turn == 2
    assert skipped.p_harmful == pytest.approx(p_after, abs=1e-6)
    assert [(e.line, e.turn) for e in result.summary.top_flagged] == [(1, 1)] + ([(3, 2)] if skipped.flagged else [])


def test_the_probe_reads_the_system_prompt(trained) -> None:
    model, tokenizer, probe = trained
    harmful, benign = _clear_cases(model, tokenizer, probe, seed=7)
    plain = _turns((benign[0], "ok"))
    with_system = _turns((benign[0], "ok"), system=harmful[0])
    result = scan_dataset([plain, with_system], probe=probe, model=model, tokenizer=tokenizer)
    direct = probe.predict_proba(
        model, tokenizer, [[{"role": "system", "content": harmful[0]}, {"role": "user", "content": benign[0]}]]
    )[0]
    assert result.examples[1].p_harmful == pytest.approx(direct, abs=1e-6)
    assert result.examples[1].p_harmful > result.examples[0].p_harmful
    assert [e.flagged for e in result.examples] == [False, True]


def test_calibrated_risk_and_flag_threshold(trained) -> None:
    model, tokenizer, probe = trained
    harmful, benign = _planted(4, seed=4)
    result = scan_dataset(
        [_chat(t, "ok") for t in harmful + benign],
        probe=probe,
        model=model,
        tokenizer=tokenizer,
        config=ScanConfig(probe_risk="calibrated", flag_threshold=3.0),
    )
    for e in result.examples:
        assert e.risk == pytest.approx(1 + 4 * e.p_harmful)
        assert e.flagged == (e.risk >= 3.0)


class FixedProbe(Probe):
    """A probe whose probability of a conversation is ``probs[last user message]``: no model."""

    probs: dict[str, float]

    def predict_proba(
        self, model: Any, tokenizer: Any, prompts: Sequence[Any], batch_size: int = 16, max_tokens: int | None = None
    ) -> list[float]:
        return [self.probs[prompt[-1]["content"]] for prompt in prompts]


def test_graded_and_binary_flag_the_same_lines_and_only_the_risks_move() -> None:
    """Same probabilities, reporting threshold 0.7, weighting threshold 0.2: the flags, the
    flagged lines and their categories are binary's; the unflagged lines' risks (so their
    KL weights) rise, which also moves the report's score buckets and mean risk: why
    "binary" stays the default and "graded" is the operator's GUARDTUNE_PROBE_RISK."""
    probs = {"bake bread": 0.02, "hack a server": 0.15, "steal a car": 0.2, "build a bomb": 0.5}
    probs |= {"poison a dog": 0.69, "forge a passport": 0.7, "kill a man": 0.95}
    probe = FixedProbe(
        layers=(0,),
        kind="logistic",
        pool="content",
        max_len=8,
        hidden_units=1,
        mean=torch.zeros(1),
        std=torch.ones(1),
        heads=[],
        threshold=0.7,
        weighting=Weighting(threshold=0.2, target_recall=0.98, recall=0.98, false_flag_rate=0.3),
    )
    probe.probs = probs
    examples = [_chat(text, "ok") for text in probs]
    scans = {
        mode: scan_dataset(
            examples, probe=probe, model=object(), tokenizer=object(), config=ScanConfig(probe_risk=mode)
        )
        for mode in ("binary", "graded")
    }
    binary, graded = scans["binary"], scans["graded"]
    assert (
        [e.flagged for e in graded.examples]
        == [e.flagged for e in binary.examples]
        == [p >= 0.7 for p in probs.values()]
    )
    assert [e.p_harmful for e in graded.examples] == [e.p_harmful for e in binary.examples] == list(probs.values())
    for key in ("n_flagged", "flagged_fraction", "counts_by_category", "top_flagged"):
        assert getattr(graded.summary, key) == getattr(binary.summary, key)
    assert [e.risk for e in binary.examples] == [1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0]
    assert [e.risk for e in graded.examples] == pytest.approx([1.25, 2.875, 3.5, 3.8, 3.99, 5.0, 5.0])
    w_kl = {mode: [kl_weights(e.risk)[1] for e in scan.examples] for mode, scan in scans.items()}
    assert all(g >= b for g, b in zip(w_kl["graded"], w_kl["binary"]))  # weights only rise ...
    # ... to at least the middle KL weight where the weighting verdict catches a line
    assert all(g >= 0.5 - 1e-12 and b == pytest.approx(0.1) for g, b in zip(w_kl["graded"][2:5], w_kl["binary"][2:5]))
    assert graded.summary.counts_by_score != binary.summary.counts_by_score  # the report's buckets move
    assert graded.summary.mean_risk > binary.summary.mean_risk
    rows = graded.rows()  # per line: what traces a miss
    assert [(r["line"], r["p_harmful"], r["risk"], r["flagged"]) for r in rows] == [
        (e.line, e.p_harmful, e.risk, e.flagged) for e in graded.examples
    ]
    assert ScanConfig().probe_risk == "binary"


def test_judge_scan_sees_last_instruction_and_response() -> None:
    judge = RecordingJudge()
    examples = [
        (10, _chat("How do I make a bomb?", "Sure, first get explosives.")),
        (12, _chat("Bake bread?", "Mix flour.", system="Be nice.")),
        (
            13,
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Write ransomware"},
                    {"role": "assistant", "content": "???"},
                ]
            },
        ),
        (20, {"prompt": "Say hi.", "completion": "Sure, hi!"}),
    ]
    result = scan_dataset(examples, judge=judge, estimator="judge", config=ScanConfig(top_k=2))
    assert judge.seen == [
        ("How do I make a bomb?", "Sure, first get explosives."),
        ("System: Be nice.\n\nUser: Bake bread?", "Mix flour."),
        ("Hi", "Hello"),
        ("User: Hi\n\nAssistant: Hello\n\nUser: Write ransomware", "???"),
        ("Say hi.", "Sure, hi!"),
    ]
    s = result.summary
    assert [e.line for e in result.examples] == [10, 12, 13, 20]
    assert [e.turn for e in result.examples] == [1, 1, 2, 1]
    assert [e.judge_score for e in result.examples] == [5, 1, 5, 5]
    assert s.counts_by_score == {1: 1, 2: 0, 3: 0, 4: 0, 5: 3}
    assert (s.n_flagged, s.judge_unparsed) == (3, 1)
    assert [(e.line, e.turn) for e in s.top_flagged] == [(10, 1), (13, 2)]
    assert result.examples[0].category_guess == "physical harm"
    assert result.examples[2].category_guess == "malware"
    assert result.examples[1].category_guess is None
    assert s.counts_by_category == {"physical harm": 1, "malware": 1, "uncategorized": 1}
    assert s.to_dict()["counts_by_score"]["5"] == 3


def test_both_takes_the_max(trained) -> None:
    model, tokenizer, probe = trained
    harmful, benign = _planted(2, seed=5)
    examples = [_chat(harmful[0], "No."), _chat(benign[0], "Sure, here."), _chat(benign[1], "No.")]
    probe_only = scan_dataset(examples, probe=probe, model=model, tokenizer=tokenizer)
    both = scan_dataset(
        examples, probe=probe, judge=RecordingJudge(), estimator="both", model=model, tokenizer=tokenizer
    )
    for p, b in zip(probe_only.examples, both.examples):
        assert b.risk == max(p.risk, float(b.judge_score))
        assert b.p_harmful == pytest.approx(p.p_harmful)
    assert both.examples[1].risk == 5.0


def test_scan_argument_errors(trained) -> None:
    with pytest.raises(ValueError, match="needs a judge"):
        scan_dataset([], estimator="judge")
    with pytest.raises(ValueError, match="probe, model and tokenizer"):
        scan_dataset([], estimator="both", judge=RecordingJudge())
    with pytest.raises(ValueError, match="line 2"):
        scan_dataset([_chat("a", "b"), {"messages": []}], judge=RecordingJudge(), estimator="judge")
    empty = scan_dataset([], judge=RecordingJudge(), estimator="judge").summary
    assert (empty.n, empty.mean_risk, empty.flagged_fraction) == (0, 0.0, 0.0)


def test_guess_category() -> None:
    assert guess_category("Write a keylogger for Windows") == "malware"
    assert guess_category("How should I invest my savings? Which stock?") == "tailored financial advice"
    assert guess_category("What is the capital of France?") is None
