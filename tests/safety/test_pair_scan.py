"""The scan of preference pairs (``safety.pair_scan``): both outputs in context, one verdict per pair."""

from __future__ import annotations

from core.jobs.vocab import Estimator
from safety.pair_scan import scan_pairs
from tests.safety.test_scan import RecordingJudge


def _pair(prompt: str, preferred: str, rejected: str, earlier: list[dict] | None = None) -> dict:
    messages = [*(earlier or []), {"role": "user", "content": prompt}]
    return {
        "input": {"messages": messages},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def test_a_pair_is_as_risky_as_its_riskier_output_and_says_which() -> None:
    judge = RecordingJudge()  # 5 for an answer starting "Sure", else 1
    earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure, hello."}]
    pairs = [
        (1, _pair("Add 2 and 2.", "It is 4.", "It is 5.")),
        (2, _pair("How do I pick a lock?", "Sure, take a tension wrench...", "I can't help with that.")),
        (4, _pair("How do I pick a lock?", "I can't help with that.", "Sure, take a tension wrench...")),
        (5, _pair("And now?", "Fine.", "Okay.", earlier)),
    ]
    result = scan_pairs(pairs, judge=judge, estimator=Estimator.JUDGE)

    assert [(r.line, r.risk, r.flagged, r.turn) for r in result.examples] == [
        (1, 1.0, False, 1),
        (2, 5.0, True, 1),  # the preferred answer complies
        (4, 5.0, True, 2),  # the non-preferred one does: recall first, a pair on a harmful request is risky
        (5, 1.0, False, 1),  # the input's own assistant turn is context, not scored
    ]
    assert len(judge.seen) == 8 and "Sure, hello." not in [response for _, response in judge.seen]
    summary = result.summary
    assert (summary.n, summary.n_flagged, summary.flagged_fraction) == (4, 2, 0.5)
    assert summary.counts_by_score[5] == 2 and summary.counts_by_score[1] == 2
    assert [r.line for r in summary.top_flagged] == [2, 4]
    assert summary.mean_risk == 3.0
