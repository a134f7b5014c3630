"""``models align`` safety-tunes a registered base model (a tiny one here) into a registered,
onboarded variant ``NAME-aligned``; a second call reuses the cached weights; ``onboard
--align`` does both steps; the audit log says who."""

from __future__ import annotations

import json
import re

import pytest

from core.db import session_scope
from core.models import BaseModelEntry
from tests.conftest import clear_caches

SMALL_RECIPE = {
    "n_harmful": 6,
    "n_benign": 6,
    "answer_max_new_tokens": 4,
    "prefix_tokens": [2],
    "n_epochs": 1,
    "batch_size": 4,
    "max_seq_len": 64,
}


def _small(monkeypatch, tmp_path):
    for key, value in {
        "GUARDTUNE_EVAL_MAX_PROMPTS": "2",
        "GUARDTUNE_EVAL_MAX_BENIGN_PROMPTS": "2",
        "GUARDTUNE_EVAL_MAX_NEW_TOKENS": "2",
        "GUARDTUNE_PROBE_LAYERS": "1",
        "GUARDTUNE_MODEL_CACHE_DIR": str(tmp_path / "models"),
        "GUARDTUNE_ALIGN_OPTIONS": json.dumps(SMALL_RECIPE),
    }.items():
        monkeypatch.setenv(key, value)
    clear_caches()


# The registry logic is backend-independent; SQLite only keeps the suite fast.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_align_registers_an_onboarded_variant_and_reuses_it(backend, ops, tiny_model, monkeypatch, tmp_path):
    _small(monkeypatch, tmp_path)
    missing = ops("models", "align", "tiny", ok=False)
    assert missing.exit_code != 0
    assert "tiny" in missing.stdout + missing.stderr

    ops("models", "onboard", "tiny", "--source", str(tiny_model))
    aligned = ops("models", "align", "tiny", "--json")
    out = aligned.json()  # stdout: the result alone, the logs went to stderr
    assert out["model"] == "tiny-aligned"
    assert out["origin"] == "trained"
    # Training shows its progress in logs without a terminal: every tenth of its steps, and the last.
    logged = re.sub(r"\x1b\[[0-9;]*m", "", aligned.stderr).splitlines()
    progress = [
        re.search(r"step=(\d+) total_steps=(\d+)", line).groups() for line in logged if "align_progress" in line
    ]
    steps = str(out["report"]["steps"])
    assert progress
    assert progress[-1] == (steps, steps)
    assert len(progress) <= 11
    assert out["path"] == str(tmp_path / "models" / "aligned" / "tiny")
    assert out["report"]["examples"]["refusals"] == 6
    assert out["onboard"]["status"] == "ready"
    assert (tmp_path / "models" / "aligned" / "tiny" / "model.safetensors").is_file()
    with session_scope() as session:
        variant = session.get(BaseModelEntry, "tiny-aligned")
        assert (variant.source, variant.status) == (out["path"], "ready")
        assert variant.baseline["eval"]["asr"]["n"] == 2

    again = ops("models", "align", "tiny", "--no-onboard", "--json").json()
    assert again["origin"] == "cached"
    assert "onboard" not in again
    with session_scope() as session:
        assert session.get(BaseModelEntry, "tiny-aligned").status == "ready"  # cached weights keep the onboarding
    story = [(r["action"], r["actor"]) for r in ops("audit", "show", "--target", "tiny-aligned", "--json").json()]
    assert story == [
        ("model.aligned", "ops:tester"),
        ("model.probe_trained", "system"),
        ("model.onboarded", "ops:tester"),
        ("model.aligned", "ops:tester"),
    ]
    listed = {m["id"]: m for m in ops("models", "list", "--json").json()}
    assert listed["tiny-aligned"]["status"] == "ready"
    ops("audit", "verify")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_onboard_with_align_onboards_base_and_variant(backend, ops, tiny_model, monkeypatch, tmp_path):
    _small(monkeypatch, tmp_path)
    out = ops("models", "onboard", "tiny", "--source", str(tiny_model), "--align", "--json").json()
    assert out["status"] == "ready"
    assert out["aligned"]["model"] == "tiny-aligned"
    assert out["aligned"]["onboard"]["status"] == "ready"
    with session_scope() as session:
        assert session.get(BaseModelEntry, "tiny-aligned").status == "ready"
