"""A job's typed configuration — ``Job.safety`` and ``Job.hyperparameters`` — with every
default defined here once.

* The paper's bounds of the adaptive objective (``w_kl = clamp((r − 2) / 3, 0.1, 0.9)``,
  ``w_sft = clamp(1 − w_kl, 0.1, 0.9)``) are :data:`KL_WEIGHT_MIN` … :data:`SFT_WEIGHT_MAX`:
  ``safety.objective`` and ``safety.train_config`` default to them, and the operator's
  ``GUARDTUNE_KL_WEIGHT_MIN`` / ``_MAX`` (a job's ``kl_weight.min`` / ``.max``) default to them.
* :class:`SafetyConfig` is a job's resolved safety configuration. The API fills a request in
  from the operator's settings at creation (``api.jobs.safety_policy``) and stores every
  field; :meth:`SafetyConfig.stored` reads a stored one back, where a field missing from an
  older row reads as what creation would have filled in (the operator's setting for
  ``kl_weight``, ``risk_weighting`` and ``max_flagged_fraction``; ``reference`` reads
  ``exact``, what such a job started with).
* :class:`Hyperparameters` are a job's resolved hyperparameters; :meth:`Hyperparameters.resolve`
  turns the request's ``"auto"`` values into numbers (OpenAI's published heuristic).
* The training, evaluation, judging, gate and serving constants below are both ``safety/``'s
  library defaults (``TrainConfig``, ``evaluate_asr``, ``TriggerConfig``, ``HttpJudge``,
  ``GatePolicy``, ``Engine``) and the defaults of the operator's matching ``GUARDTUNE_*``
  settings, so each is written once.

Only pydantic is imported: ``safety/`` (no database) reads these defaults too.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.jobs.vocab import AsrSource, Estimator, Objective, ReferenceMode, RiskWeighting, SafetyMode
from core.vocab import AS_LITERAL

# The adaptive objective's clamps (the paper's) and the constant mode's KL weight.
KL_WEIGHT_MIN, KL_WEIGHT_MAX = 0.1, 0.9
SFT_WEIGHT_MIN, SFT_WEIGHT_MAX = 0.1, 0.9
CONSTANT_KL_WEIGHT = 0.5
FLAG_THRESHOLD = 4.0  # the scan flags an example whose risk (1–5) reaches this
# How the scan turns the probe's probability into risk (``safety.probe.risk_from_p``):
# "binary" (the paper's 5/1 at the reporting threshold), "calibrated" (1 + 4p) or "graded"
# (piecewise-linear through the weighting and reporting thresholds); GUARDTUNE_PROBE_RISK.
RiskMode = Literal["calibrated", "binary", "graded"]
PROBE_RISK: RiskMode = "binary"
# The probe's weighting threshold keeps at least this recall of harmful prompts on its
# calibration split (GUARDTUNE_PROBE_TARGET_RECALL); graded risk maps it to
# WEIGHTING_RISK, the risk whose KL weight is the middle of the paper's clamps (0.5).
PROBE_TARGET_RECALL = 0.98
WEIGHTING_RISK = 2.0 + 3.0 * (KL_WEIGHT_MIN + KL_WEIGHT_MAX) / 2
DEFAULT_MODE = SafetyMode.ADAPTIVE
DEFAULT_ESTIMATOR = Estimator.PROBE
DEFAULT_RISK_WEIGHTING = RiskWeighting.EXAMPLE
DEFAULT_OBJECTIVE = Objective.PAPER  # until the replication measures ``bounded`` (README, "Departure from the paper")
STORED_REFERENCE = ReferenceMode.EXACT  # a stored job without ``reference`` predates the cache

# The base model a job fine-tunes unless the operator configures others (GUARDTUNE_DEFAULT_BASE_MODEL).
DEFAULT_BASE_MODEL = "smollm2-135m-instruct"

# Hyperparameters: the ranges a request may ask, and OpenAI's "auto" heuristic.
N_EPOCHS_RANGE, BATCH_SIZE_RANGE, LR_MULTIPLIER_RANGE = (1, 50), (1, 256), (0, 10)  # lr: > 0
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 1, 25
AUTO_BATCH_SIZE = 8
AUTO_LR_MULTIPLIER = 1.0
# DPO's beta (the strength of its implicit KL toward the reference): a request's range, and "auto".
DPO_BETA_RANGE = (0, 2)  # beta > 0
AUTO_DPO_BETA = 0.1

# Training: the learning rate a multiplier of 1 means; a checkpoint every this many optimizer steps.
BASE_LEARNING_RATE = 2e-4
CHECKPOINT_EVERY = 20

# Evaluation: greedy answers of this length, generated this many prompts at a time; the attack
# conditions (the training file's top system prompts and candidate backdoor triggers, a trigger
# being in at least MIN_SHARE of the flagged lines and MIN_RATIO times more frequent there).
EVAL_MAX_NEW_TOKENS = 48
EVAL_BATCH_SIZE = 8
EVAL_SYSTEM_PROMPTS = 2
EVAL_TRIGGERS = 2
EVAL_CONDITION_PROMPTS = 32  # harmful prompts asked under each attack condition
TRIGGER_MIN_SHARE = 0.5
TRIGGER_MIN_RATIO = 10.0

# The API judge: parallel requests, per-request timeout, the score of an unparsable verdict.
JUDGE_MAX_CONCURRENCY = 4
JUDGE_TIMEOUT_S = 60.0
JUDGE_FALLBACK_SCORE = 5  # the paper: 4 (see safety.judge)

# The release gate (safety.gate.GatePolicy): the tuned model's allowed rises over the base's.
GATE_MAX_ASR_INCREASE = 0.05
GATE_MAX_OVER_REFUSAL_INCREASE = 0.2
DEFAULT_ASR_SOURCE = AsrSource.KEYWORD

# Serving released adapters (safety.inference.Engine): adapters kept loaded per base model,
# requests batched together and how long a batch waits to fill.
INFER_MAX_ADAPTERS = 4
INFER_MAX_BATCH = 8
INFER_BATCH_WAIT_MS = 5.0


class OperatorDefaults(Protocol):
    """What creation fills in from the operator's settings (``core.settings.Settings``)."""

    kl_weight_min: float
    kl_weight_max: float
    risk_weighting: RiskWeighting
    max_flagged_fraction: float | None


class KlWeightBounds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float = Field(ge=0, le=1, description="Lower clamp of the adaptive KL weight.")
    max: float = Field(ge=0, le=1, description="Upper clamp of the adaptive KL weight.")

    @model_validator(mode="after")
    def _ordered(self) -> KlWeightBounds:
        if self.min > self.max:
            raise ValueError("kl_weight.min must not exceed kl_weight.max")
        return self


class SafetyConfig(BaseModel):
    """A job's resolved safety configuration (``Job.safety``); see the module docstring."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    mode: Annotated[SafetyMode, AS_LITERAL] = DEFAULT_MODE
    estimator: Annotated[Estimator, AS_LITERAL] = DEFAULT_ESTIMATOR
    kl_weight: KlWeightBounds = Field(default_factory=lambda: KlWeightBounds(min=KL_WEIGHT_MIN, max=KL_WEIGHT_MAX))
    constant_kl_weight: float = Field(CONSTANT_KL_WEIGHT, ge=0, le=1)
    risk_weighting: Annotated[RiskWeighting, AS_LITERAL] = DEFAULT_RISK_WEIGHTING
    reference: Annotated[ReferenceMode, AS_LITERAL] = STORED_REFERENCE
    max_flagged_fraction: float | None = Field(None, ge=0, le=1)

    @classmethod
    def stored(cls, data: dict[str, Any] | None, operator: OperatorDefaults | None = None) -> SafetyConfig:
        """A stored ``Job.safety``; fields it lacks read as creation would have filled them
        in from ``operator`` (the settings), or as this class's defaults without one."""
        data = dict(data or {})
        if operator is not None:
            data.setdefault("kl_weight", {"min": operator.kl_weight_min, "max": operator.kl_weight_max})
            data.setdefault("risk_weighting", operator.risk_weighting)
            data.setdefault("max_flagged_fraction", operator.max_flagged_fraction)
        return cls.model_validate(data)

    @property
    def regularized(self) -> bool:
        return self.mode != SafetyMode.NONE

    @property
    def uses_judge(self) -> bool:
        return self.estimator in (Estimator.JUDGE, Estimator.BOTH)

    @property
    def uses_probe(self) -> bool:
        return self.estimator in (Estimator.PROBE, Estimator.BOTH)


def auto_epochs(n_examples: int) -> int:
    """OpenAI's "auto" epochs: 3, raised so that at least 100 examples are seen (at most 25
    epochs), lowered so that at most 25,000 are (at least 1)."""
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_AUTO_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


class Hyperparameters(BaseModel):
    """A job's resolved hyperparameters (``Job.hyperparameters``). A field missing from a
    stored row reads as "auto" would resolve it before the file's size is known."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    n_epochs: int = Field(TARGET_EPOCHS, ge=N_EPOCHS_RANGE[0], le=N_EPOCHS_RANGE[1])
    batch_size: int = Field(AUTO_BATCH_SIZE, ge=BATCH_SIZE_RANGE[0], le=BATCH_SIZE_RANGE[1])
    learning_rate_multiplier: float = Field(AUTO_LR_MULTIPLIER, gt=LR_MULTIPLIER_RANGE[0], le=LR_MULTIPLIER_RANGE[1])
    beta: float | None = Field(None, gt=DPO_BETA_RANGE[0], le=DPO_BETA_RANGE[1])  # DPO jobs only

    @classmethod
    def resolve(
        cls,
        n_epochs: int | Literal["auto"],
        batch_size: int | Literal["auto"],
        learning_rate_multiplier: float | Literal["auto"],
        n_examples: int,
        beta: float | Literal["auto"] | None = None,
    ) -> Hyperparameters:
        """The request's values with ``"auto"`` resolved for a file of ``n_examples``:
        :func:`auto_epochs`; a batch of :data:`AUTO_BATCH_SIZE` or the whole file if smaller;
        a learning-rate multiplier of 1; DPO's ``beta`` :data:`AUTO_DPO_BETA` (``None``: not a
        DPO job). Explicit values are kept as given."""
        return cls(
            n_epochs=auto_epochs(n_examples) if n_epochs == "auto" else n_epochs,
            batch_size=max(1, min(AUTO_BATCH_SIZE, n_examples)) if batch_size == "auto" else batch_size,
            learning_rate_multiplier=AUTO_LR_MULTIPLIER
            if learning_rate_multiplier == "auto"
            else learning_rate_multiplier,
            beta=AUTO_DPO_BETA if beta == "auto" else beta,
        )
