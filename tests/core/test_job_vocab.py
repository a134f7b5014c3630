"""The job vocabulary (core.jobs): statuses, the pipeline table, and the typed safety and
hyperparameter configuration with its defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.jobs import config
from core.jobs.config import Hyperparameters, SafetyConfig, auto_epochs
from core.jobs.pipeline import DEFAULT_QUEUE, GPU_QUEUE, PIPELINE, Stage
from core.jobs.vocab import ACTIVE, LIVE, TERMINAL, JobStage, JobStatus


def test_statuses_split_into_terminal_active_and_live():
    assert set(TERMINAL) == {"succeeded", "failed", "cancelled"}
    assert set(ACTIVE) == {"validating_files", "queued", "running", "paused"}
    assert set(LIVE) == set(ACTIVE) - {"paused"}
    assert JobStatus.FAILED.terminal
    assert not JobStatus.PAUSED.terminal
    assert JobStatus.QUEUED == "queued"
    assert f"job.{JobStatus.CANCELLED}" == "job.cancelled"


def test_the_pipeline_is_one_ordered_table():
    assert [spec.stage for spec in PIPELINE] == ["validate", "scan", "train", "evaluate", "gate", "release"]
    assert [Stage.VALIDATE.next, Stage.GATE.next, Stage.RELEASE.next] == [Stage.SCAN, Stage.RELEASE, None]
    assert Stage.TRAIN.task == "guardtune.pipeline.train"
    assert [s.queue for s in Stage] == [DEFAULT_QUEUE, GPU_QUEUE, GPU_QUEUE, GPU_QUEUE, DEFAULT_QUEUE, DEFAULT_QUEUE]
    assert [Stage.running_as(s) for s in JobStage] == [Stage.SCAN, Stage.TRAIN, Stage.EVALUATE, Stage.GATE]
    assert [spec.job_stage for spec in PIPELINE if spec.job_stage] == list(JobStage)


def test_safety_defaults_are_the_papers_and_one_definition():
    default = SafetyConfig()
    assert (default.mode, default.estimator) == ("adaptive", "probe")
    assert (default.risk_weighting, default.reference) == ("example", "exact")
    assert (default.kl_weight.min, default.kl_weight.max, default.constant_kl_weight) == (0.1, 0.9, 0.5)
    assert default.max_flagged_fraction is None

    from api.jobs.schemas import SafetyIn
    from core.settings import Settings

    wire = SafetyIn()
    assert (wire.mode, wire.estimator, wire.constant_kl_weight) == (default.mode, default.estimator, 0.5)
    settings = Settings()
    assert (settings.kl_weight_min, settings.kl_weight_max) == (config.KL_WEIGHT_MIN, config.KL_WEIGHT_MAX)


def test_a_stored_safety_config_fills_missing_fields_as_creation_would():
    class Operator:
        kl_weight_min, kl_weight_max, risk_weighting, max_flagged_fraction = 0.2, 0.95, "batch", 0.3

    stored = SafetyConfig.stored({"mode": "constant", "estimator": "judge"}, Operator())
    assert (stored.kl_weight.min, stored.kl_weight.max) == (0.2, 0.95)
    assert (stored.risk_weighting, stored.max_flagged_fraction, stored.reference) == ("batch", 0.3, "exact")
    assert stored.uses_judge
    assert not stored.uses_probe
    assert stored.regularized
    kept = SafetyConfig.stored({"kl_weight": {"min": 0.5, "max": 1.0}, "max_flagged_fraction": None}, Operator())
    assert (kept.kl_weight.min, kept.max_flagged_fraction) == (0.5, None)
    assert SafetyConfig.stored(None).model_dump() == SafetyConfig().model_dump()
    assert not SafetyConfig.stored({"mode": "none"}).regularized


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "sft"},
        {"estimator": "oracle"},
        {"kl_weight": {"min": 0.9, "max": 0.1}},
        {"constant_kl_weight": 1.5},
        {"max_flagged_fraction": -0.1},
        {"reference": "lazy"},
    ],
)
def test_safety_config_refuses_invalid_values(bad):
    with pytest.raises(ValidationError):
        SafetyConfig.stored(bad)


def test_hyperparameters_resolve_auto_as_the_api_documents():
    def resolved(*args):
        hp = Hyperparameters.resolve(*args)
        return hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier

    assert resolved("auto", "auto", "auto", 50) == (3, 8, 1.0)
    assert resolved("auto", "auto", "auto", 5) == (20, 5, 1.0)
    assert resolved(2, 16, 0.5, 50) == (2, 16, 0.5)
    assert list(Hyperparameters().model_dump(exclude_none=True)) == [
        "n_epochs",
        "batch_size",
        "learning_rate_multiplier",
    ]
    assert Hyperparameters.resolve("auto", "auto", "auto", 5).beta is None  # a supervised job has none
    assert Hyperparameters.resolve("auto", "auto", "auto", 5, beta="auto").beta == config.AUTO_DPO_BETA
    assert Hyperparameters.resolve("auto", "auto", "auto", 5, beta=0.5).beta == 0.5
    assert [auto_epochs(n) for n in (1, 2, 40, 10_000, 100_000)] == [25, 25, 3, 2, 1]


def test_stored_hyperparameters_default_to_the_auto_values():
    stored = Hyperparameters.model_validate({"n_epochs": 1})
    assert (stored.n_epochs, stored.batch_size, stored.learning_rate_multiplier) == (1, config.AUTO_BATCH_SIZE, 1.0)
    for bad in ({"n_epochs": 0}, {"batch_size": 257}, {"learning_rate_multiplier": 0}):
        with pytest.raises(ValidationError):
            Hyperparameters.model_validate(bad)


def test_safety_reads_the_defaults_without_the_database():
    """``safety/`` knows no database or queue: the vocabulary it imports pulls in neither."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import core.jobs, safety.objective, safety.scan\n"
        "heavy = ('sqlalchemy', 'celery', 'core.db', 'core.models', 'core.settings')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
