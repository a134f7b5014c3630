"""The demo onboards its aligned variant once: a later run whose variant came from the cache
reuses the onboarding an earlier run stored in the registry (``cli.demo.earlier_onboarding``).
On the embedded stack in a tmp home: registry rows written here must not show in the model
lists of tests that share the deployment's Postgres."""

from __future__ import annotations

import pytest

from cli.demo import earlier_onboarding
from core.db import session_scope
from core.models import BaseModelEntry
from migrations import migrate

PROBE = {
    "layers": [3, 4],
    "auroc": 0.97,
    "threshold": 0.6,
    "fpr_at_threshold": 0.03,
    "tpr_at_threshold": 0.9,
    "n_test": 80,
    "target_fpr": 0.05,
    "n_calibrate": 80,
    "calibrate_fpr": 0.04,
    "select_auroc": 0.98,
}
BASELINE = {"probe": PROBE, "eval": {"asr": {"asr_keyword": 0.17, "asr_judge": None}, "over_refusal": {"rate": 0.03}}}


@pytest.fixture
def registry(embedded_env) -> None:
    migrate.upgrade()


def _variant(name: str, **fields) -> dict:
    row = {"status": "ready", "probe_prefix": f"models/{name}/probe", "baseline": BASELINE, "context_length": 2048}
    with session_scope() as session:
        session.merge(BaseModelEntry(id=name, source=f"/models/{name}", **{**row, **fields}))
    return {"model": name, "origin": "cached"}


def test_a_cached_ready_variant_reuses_its_onboarding(registry):
    summary = earlier_onboarding(_variant("demo-reuse-aligned"))
    assert summary["model"] == "demo-reuse-aligned"
    assert summary["status"] == "ready"
    assert summary["baseline"] == {"asr_keyword": 0.17, "asr_judge": None, "over_refusal": 0.03}
    assert summary["probe"] == PROBE
    assert summary["probe_summary"].startswith("probe layers 3-4: AUROC 0.970")
    assert "weighting threshold" not in summary["probe_summary"]  # a probe report from before it
    assert summary["context_length"] == 2048


@pytest.mark.parametrize(
    ("origin", "fields"),
    [
        ("prebuilt", {}),  # new weights this run: onboard them
        ("trained", {}),
        ("cached", {"status": "registered"}),  # never onboarded (or reset by a new alignment)
        ("cached", {"status": "failed"}),
        ("cached", {"probe_prefix": None}),
    ],
)
def test_anything_else_is_onboarded_again(registry, origin, fields):
    name = f"demo-{origin}-{next(iter(fields.values()), 'as-stored')}-aligned"
    aligned = {**_variant(name, **fields), "origin": origin}
    assert earlier_onboarding(aligned) is None


def test_a_variant_missing_from_the_registry_is_onboarded(registry):
    assert earlier_onboarding({"model": "no-such-aligned", "origin": "cached"}) is None
