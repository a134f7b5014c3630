"""The one settings object: embedded defaults, env overrides, secret refusal."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import INSECURE_SECRET, Settings


def test_embedded_defaults_live_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("GUARDTUNE_HOME", str(tmp_path))
    s = Settings()
    assert s.db_url == f"sqlite:///{tmp_path}/guardtune.db"
    assert s.broker == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert s.broker_is_embedded
    assert s.storage == f"file://{tmp_path}/objects"
    assert s.models_dir == tmp_path / "models"
    assert s.run_embedded_worker


def test_production_urls_from_env(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_DATABASE_URL", "postgresql+psycopg://u@db/gt")
    monkeypatch.setenv("GUARDTUNE_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("GUARDTUNE_STORAGE_URL", "s3://bucket/prefix")
    s = Settings()
    assert s.db_url.startswith("postgresql")
    assert s.result_backend == "redis://redis:6379/0"
    assert not s.broker_is_embedded
    assert not s.run_embedded_worker


def test_production_refuses_insecure_secret(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_ENV", "production")
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", "short")
    with pytest.raises(ValidationError, match="32 characters"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", "a" * 40)
    assert Settings().secret_key != INSECURE_SECRET


def test_production_needs_an_audit_signing_key_apart_from_the_pepper(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_ENV", "production")
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", "k" * 40)
    with pytest.raises(ValidationError, match="GUARDTUNE_AUDIT_SIGNING_KEY must be set"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", "k" * 40)
    with pytest.raises(ValidationError, match="must differ from GUARDTUNE_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_AUDIT_SIGNING_KEY", "a" * 40)
    assert Settings().anchor_signing_key == "a" * 40


def test_outside_production_the_anchor_key_is_derived_from_the_secret_yet_differs(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_SECRET_KEY", "k" * 40)
    assert Settings().anchor_signing_key != "k" * 40


def test_the_renamed_kl_weight_settings_are_refused_under_their_old_names(monkeypatch):
    """An operator's bound set under a name from before the rename is never silently dropped."""
    monkeypatch.setenv("GUARDTUNE_KL_WEIGHT_LO", "0.3")
    with pytest.raises(ValidationError, match="GUARDTUNE_KL_WEIGHT_LO is now GUARDTUNE_KL_WEIGHT_MIN"):
        Settings()
    monkeypatch.delenv("GUARDTUNE_KL_WEIGHT_LO")
    monkeypatch.setenv("guardtune_kl_weight_hi", "0.95")
    with pytest.raises(ValidationError, match="GUARDTUNE_KL_WEIGHT_HI is now GUARDTUNE_KL_WEIGHT_MAX"):
        Settings()
    monkeypatch.delenv("guardtune_kl_weight_hi")
    monkeypatch.setenv("GUARDTUNE_KL_WEIGHT_MIN", "0.3")
    monkeypatch.setenv("GUARDTUNE_KL_WEIGHT_MAX", "0.95")
    assert (Settings().kl_weight_min, Settings().kl_weight_max) == (0.3, 0.95)


def test_torch_threads_must_be_positive(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_TORCH_THREADS", "0")
    with pytest.raises(ValidationError, match="torch_threads"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_TORCH_THREADS", "4")
    assert Settings().torch_threads == 4


def test_defaults_are_the_libraries_defaults(monkeypatch):
    """Each default is written once: a setting's default is the library's (torch-free ones here)."""
    import inspect
    import os

    from core.datasets import Limits
    from safety.attacks import TriggerConfig, plan_conditions
    from safety.gate import GatePolicy

    for name in [n for n in os.environ if n.startswith("GUARDTUNE_")]:
        monkeypatch.delenv(name)
    s, triggers, gate = Settings(), TriggerConfig(), GatePolicy()
    assert Limits.from_settings(s) == Limits()
    assert (s.trigger_min_share, s.trigger_min_ratio, s.eval_triggers) == (
        triggers.min_share,
        triggers.min_ratio,
        triggers.top_k,
    )
    assert s.eval_system_prompts == inspect.signature(plan_conditions).parameters["system_prompts"].default
    assert (s.gate_max_asr_increase, s.gate_max_over_refusal_increase, s.gate_asr_source) == (
        gate.max_asr_increase,
        gate.max_over_refusal_increase,
        gate.use,
    )


def test_the_objective_is_an_operator_setting_defaulting_to_the_papers(monkeypatch):
    """GUARDTUNE_OBJECTIVE: "paper" (the trainer's default too) until the replication measures "bounded"."""
    from core.jobs.vocab import Objective
    from safety.train_config import TrainConfig

    monkeypatch.delenv("GUARDTUNE_OBJECTIVE", raising=False)
    assert Settings().objective == TrainConfig().objective == Objective.PAPER
    monkeypatch.setenv("GUARDTUNE_OBJECTIVE", "bounded")
    assert Settings().objective == Objective.BOUNDED
    monkeypatch.setenv("GUARDTUNE_OBJECTIVE", "clipped")
    with pytest.raises(ValidationError, match="objective"):
        Settings()


def test_probe_risk_and_target_recall_from_env(monkeypatch):
    s = Settings()
    assert (s.probe_risk, s.probe_target_recall) == ("binary", 0.98)
    monkeypatch.setenv("GUARDTUNE_PROBE_RISK", "graded")
    monkeypatch.setenv("GUARDTUNE_PROBE_TARGET_RECALL", "0.95")
    assert (Settings().probe_risk, Settings().probe_target_recall) == ("graded", 0.95)
    monkeypatch.setenv("GUARDTUNE_PROBE_RISK", "fuzzy")
    with pytest.raises(ValidationError, match="probe_risk"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_PROBE_RISK", "calibrated")
    monkeypatch.setenv("GUARDTUNE_PROBE_TARGET_RECALL", "1.5")
    with pytest.raises(ValidationError, match="probe_target_recall"):
        Settings()


def test_quantize_4bit_is_refused_off_cuda_with_the_settings_to_change(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_QUANTIZE", "4bit")
    with pytest.raises(ValidationError, match=r"GUARDTUNE_QUANTIZE=4bit \(bitsandbytes NF4\) needs a CUDA device"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_DEVICE", "cuda:1")
    assert Settings().quantize == "4bit"


def test_quantize_accepts_only_none_and_4bit(monkeypatch):
    monkeypatch.setenv("GUARDTUNE_DEVICE", "cuda")
    monkeypatch.setenv("GUARDTUNE_QUANTIZE", "8bit")
    with pytest.raises(ValidationError, match="quantize"):
        Settings()


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), ("true", True), ("false", False)])
def test_activation_checkpointing_is_auto_or_a_boolean(monkeypatch, value, parsed):
    monkeypatch.setenv("GUARDTUNE_ACTIVATION_CHECKPOINTING", value)
    assert Settings().activation_checkpointing == parsed


def test_micro_batch_tokens_default_to_none_and_must_be_positive(monkeypatch):
    assert Settings().micro_batch_tokens is None
    monkeypatch.setenv("GUARDTUNE_MICRO_BATCH_TOKENS", "0")
    with pytest.raises(ValidationError, match="micro_batch_tokens"):
        Settings()
    monkeypatch.setenv("GUARDTUNE_MICRO_BATCH_TOKENS", "16384")
    assert Settings().micro_batch_tokens == 16384


@pytest.mark.parametrize(
    ("setting", "device", "enabled"),
    [
        ("auto", "cuda", True),
        ("auto", "cuda:1", True),
        ("auto", "cpu", False),
        ("true", "cpu", True),
        ("false", "cuda", False),
    ],
)
def test_activation_checkpointing_auto_is_on_for_cuda_only(monkeypatch, setting, device, enabled):
    monkeypatch.setenv("GUARDTUNE_ACTIVATION_CHECKPOINTING", setting)
    monkeypatch.setenv("GUARDTUNE_DEVICE", device)
    assert Settings().checkpointing is enabled
