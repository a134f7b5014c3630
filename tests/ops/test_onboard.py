"""``models onboard`` drives the pipeline's real onboarding on a tiny model: probe
trained and stored, baseline measured, model ready, and the audit log says who."""

from __future__ import annotations

from core.db import session_scope
from core.models import BaseModelEntry
from core.storage import get_store
from tests.conftest import clear_caches


def test_onboard_a_new_base_model(backend, ops, tiny_model, monkeypatch):
    for key, value in {
        "GUARDTUNE_EVAL_MAX_PROMPTS": "3",
        "GUARDTUNE_EVAL_MAX_BENIGN_PROMPTS": "3",
        "GUARDTUNE_EVAL_MAX_NEW_TOKENS": "3",
        "GUARDTUNE_PROBE_TARGET_RECALL": "0.9",
    }.items():
        monkeypatch.setenv(key, value)
    clear_caches()
    out = ops("models", "onboard", "tiny", "--source", str(tiny_model), "--json").json()
    assert out["status"] == "ready"
    assert out["source"] == str(tiny_model)
    assert out["context_length"] == 2048
    probe = out["result"]["probe"]  # calibrated on one split, reported on another
    assert probe["calibrate_fpr"] <= probe["target_fpr"] == 0.05
    assert probe["n_test"] > 0
    assert probe["n_calibrate"] > 0
    assert probe["n_select"] > 0
    summary = out["result"]["probe_summary"]
    assert f"AUROC {probe['auroc']:.3f}" in summary
    assert f"FPR {probe['fpr_at_threshold']:.1%}" in summary
    assert f"{probe['n_test']} held-out prompts" in summary
    assert f"threshold {probe['threshold']:.3f}" in summary
    assert probe["target_recall"] == 0.9  # GUARDTUNE_PROBE_TARGET_RECALL
    assert probe["calibrate_weight_recall"] >= 0.9
    assert f"weighting threshold {probe['weight_threshold']:.3f}" in summary
    assert f"recall {probe['weight_recall']:.1%}, false flags {probe['weight_fpr']:.1%}" in summary
    head = probe["answer_head"]  # the answer-side head, trained and stored with the probe
    assert head["n_test"] > 0
    assert f"answer-side head: AUROC {head['auroc']:.3f}" in summary
    with session_scope() as session:
        entry = session.get(BaseModelEntry, "tiny")
        assert entry.status == "ready"
        assert {k.rsplit("/", 1)[-1] for k in get_store().list(entry.probe_prefix)} >= {
            "probe.json",
            "probe.safetensors",
            "answer.json",
            "answer.safetensors",
        }
        assert entry.baseline["eval"]["asr"]["n"] == 3
        assert entry.baseline["probe"] == probe
    story = ops("audit", "show", "--target", "tiny", "--json").json()
    assert [(r["action"], r["actor"]) for r in story] == [
        ("model.register", "ops:tester"),
        ("model.probe_trained", "system"),
        ("model.onboarded", "ops:tester"),
    ]
    listed = {m["id"]: m for m in ops("models", "list", "--json").json()}
    assert listed["tiny"]["status"] == "ready"
    ops("audit", "verify")
