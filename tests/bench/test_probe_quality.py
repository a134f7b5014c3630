"""``bench/probe_quality.py``: its measurement on a tiny model, and the README quoting its result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.probe_quality import BENIGN_EXT, HARMFUL_EXT, load_external, quality, readme_row
from safety.base_models import load_base_model
from safety.probe import auroc
from tests.conftest import REPO

SHARED_DATA = REPO.parent / "shared" / "data"


def test_quality_reports_three_splits_and_external_rates_at_the_deployed_threshold(tiny_model: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model), cache_dir=tiny_model.parent)
    external = load_external(SHARED_DATA, advbench_n=6, gsm8k_n=4, seed=0)
    external = {k: v[:5] for k, v in external.items()}
    result, probe = quality(model, tokenizer, external, seed=0, batch_size=32)
    s, e = result["splits"], result["external"]
    assert s["calibrate_fpr"] <= s["target_fpr"] == 0.05
    assert result["threshold"] == probe.threshold == s["threshold"]
    assert s["n_fit"] > 0
    assert s["n_select"] > 0
    assert s["n_calibrate"] > 0
    assert s["n_test"] > 0
    p = {n: probe.predict_proba(model, tokenizer, external[n]) for n in external}
    harmful, benign = [x for n in HARMFUL_EXT for x in p[n]], [x for n in BENIGN_EXT for x in p[n]]
    assert e["auroc"] == pytest.approx(auroc(harmful + benign, [1] * len(harmful) + [0] * len(benign)), abs=1e-6)
    thr = probe.threshold
    assert e["at_threshold"]["fpr"] == sum(x >= thr for x in benign) / len(benign)
    assert e["at_threshold"]["per_source"]["mtbench"]["fpr"] == sum(x >= thr for x in p["mtbench"]) / 5
    assert e["aoa_turns_flagged"] == sum(x >= thr for x in p["aoa_turns"]) / 5
    w = probe.weight_threshold
    assert e["at_weight_threshold"]["threshold"] == w == s["weight_threshold"]
    assert e["at_weight_threshold"]["tpr"] == sum(x >= w for x in harmful) / len(harmful)
    assert e["at_weight_threshold"]["fpr"] == sum(x >= w for x in benign) / len(benign)
    assert s["calibrate_weight_recall"] >= s["target_recall"] == 0.98


def test_readme_quotes_the_recorded_result() -> None:
    doc = json.loads((REPO / "bench" / "results" / "probe_quality.json").read_text())
    assert doc["git"]["dirty"] is False  # measured from a committed, clean tree
    assert readme_row(doc) in (REPO / "README.md").read_text()
