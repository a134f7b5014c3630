"""``fine_tuning.job`` and its events, checkpoints and safety report.

OpenAI's fields keep OpenAI's shapes; guardtune adds the ``safety`` object on create and on
the job, and the ``fine_tuning.job.safety_report`` object. Statuses, safety types and
defaults come from :mod:`core.jobs` (the wire spells them as plain strings).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

from core.jobs import config
from core.jobs.config import KlWeightBounds
from core.jobs.vocab import Estimator, ReferenceMode, RiskWeighting, SafetyMode
from core.jobs.vocab import JobStatus as JobStatusEnum
from core.vocab import AS_LITERAL

Auto = Literal["auto"]
JobStatus = Annotated[JobStatusEnum, AS_LITERAL]  # an inline enum in the OpenAPI schema
EventLevel = Literal["info", "warn", "error"]
EventType = Literal["message", "metrics"]


def _auto_or(kind: type[int] | type[float], low: float, high: float, *, exclusive_low: bool = False) -> BeforeValidator:
    """The validator of ``"auto"`` or a number in ``[low, high]`` (``(low, high]`` when
    ``exclusive_low``), with one clear error message (not one per union member)."""
    what = "an integer" if kind is int else "a number"
    message = f"must be 'auto' or {what} {'>' if exclusive_low else '>='} {low} and <= {high}"

    def check(value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(message)
        if kind is int and value != int(value):
            raise ValueError(message)
        number = kind(value)
        if number > high or number < low or (exclusive_low and number == low):
            raise ValueError(message)
        return number

    return BeforeValidator(check)


NEpochs = Annotated[
    Auto | Annotated[int, Field(ge=config.N_EPOCHS_RANGE[0], le=config.N_EPOCHS_RANGE[1])],
    _auto_or(int, *config.N_EPOCHS_RANGE),
]
BatchSize = Annotated[
    Auto | Annotated[int, Field(ge=config.BATCH_SIZE_RANGE[0], le=config.BATCH_SIZE_RANGE[1])],
    _auto_or(int, *config.BATCH_SIZE_RANGE),
]
LrMultiplier = Annotated[
    Auto | Annotated[float, Field(gt=config.LR_MULTIPLIER_RANGE[0], le=config.LR_MULTIPLIER_RANGE[1])],
    _auto_or(float, *config.LR_MULTIPLIER_RANGE, exclusive_low=True),
]

Beta = Annotated[
    Auto | Annotated[float, Field(gt=config.DPO_BETA_RANGE[0], le=config.DPO_BETA_RANGE[1])],
    _auto_or(float, *config.DPO_BETA_RANGE, exclusive_low=True),
]


# -- requests ----------------------------------------------------------------------------
class HyperparametersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: NEpochs = "auto"
    batch_size: BatchSize = "auto"
    learning_rate_multiplier: LrMultiplier = "auto"


class SupervisedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersIn | None = None


class DpoHyperparametersIn(HyperparametersIn):
    beta: Beta = "auto"


class DpoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: DpoHyperparametersIn | None = None


class MethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedIn | None = None
    dpo: DpoIn | None = None
    reinforcement: dict[str, Any] | None = None


class SafetyIn(BaseModel):
    """guardtune extension: how the job is regularized against safety degradation."""

    model_config = ConfigDict(extra="forbid")

    mode: Annotated[SafetyMode, AS_LITERAL] = Field(
        default=config.DEFAULT_MODE,
        description="adaptive: KL weight from each example's risk; constant: fixed KL weight; none: plain SFT.",
    )
    estimator: Annotated[Estimator, AS_LITERAL] = Field(
        default=config.DEFAULT_ESTIMATOR, description="Risk estimator of the adaptive mode (both = max of the two)."
    )
    kl_weight: KlWeightBounds | None = Field(
        default=None, description="Bounds of the adaptive KL weight; default and allowed range set by the operator."
    )
    constant_kl_weight: float = Field(
        default=config.CONSTANT_KL_WEIGHT, ge=0, le=1, description="KL weight of the constant mode."
    )
    risk_weighting: Annotated[RiskWeighting, AS_LITERAL] | None = Field(
        default=None,
        description="example: each example weighted by its own risk; batch: by the batch's mean risk "
        "(the paper's code, an ablation). Default set by the operator.",
    )
    max_flagged_fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Fail the job when the scan flags a larger share (at most the operator's).",
    )
    reference: Annotated[ReferenceMode, AS_LITERAL] | None = Field(
        default=None,
        description="cached: KL against the reference's top-k log-probs computed once in the scan; exact: a "
        "reference forward every step. Default set by the operator.",
    )


class WandbIn(BaseModel):
    """OpenAI's W&B integration: the run's project, display name, entity and tags."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128)
    entity: str | None = Field(None, max_length=128)
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(None, max_length=50)


class IntegrationIn(BaseModel):
    """One of ``integrations``: OpenAI's ``{"type": "wandb", "wandb": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["wandb"]
    wandb: WandbIn


Suffix = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class JobCreate(BaseModel):
    """``POST /v1/fine_tuning/jobs`` (OpenAI's parameters plus ``safety``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    suffix: Suffix | None = Field(None, description="Up to 64 characters of A-Z a-z 0-9 . _ -")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[MetadataKey, MetadataValue] | None = None
    integrations: list[IntegrationIn] | None = Field(None, max_length=1)
    safety: SafetyIn | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > 16:
            raise ValueError("metadata holds at most 16 keys")
        return value


# -- responses ---------------------------------------------------------------------------
class Hyperparameters(BaseModel):
    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None
    n_epochs: Auto | int | None = None


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Auto | float | None = None


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class SafetyState(BaseModel):
    """guardtune extension on the job: the configuration and where the safety work stands."""

    mode: Annotated[SafetyMode, AS_LITERAL]
    estimator: Annotated[Estimator, AS_LITERAL]
    kl_weight: KlWeightBounds
    constant_kl_weight: float
    risk_weighting: Annotated[RiskWeighting, AS_LITERAL] = config.DEFAULT_RISK_WEIGHTING
    reference: Annotated[ReferenceMode, AS_LITERAL] = config.STORED_REFERENCE
    max_flagged_fraction: float | None = None
    stage: str | None = Field(None, description="scanning | training | evaluating | gating while running")
    scan_summary: dict[str, Any] | None = None
    eval_summary: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[IntegrationIn] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    method: Method | None = None
    user_provided_suffix: str | None = None
    safety: SafetyState


class JobEstimate(BaseModel):
    """What a job would take (``POST /v1/fine_tuning/jobs?dry_run=true``): the request checked
    as a create is, nothing created."""

    object: Literal["fine_tuning.job.estimate"] = "fine_tuning.job.estimate"
    model: str
    training_file: str
    method: Method
    hyperparameters: Hyperparameters = Field(description="As the job would resolve them")
    safety: SafetyState
    examples: int = Field(description="Examples in the training file")
    tokens: int = Field(description="Tokens trained: the training file's estimated tokens × epochs")
    steps: int = Field(description="Optimizer steps: batches per epoch × epochs")
    estimated_seconds: float | None = Field(
        description="Expected wall time from validation to release on this deployment's workers (the sum of "
        "`stages`); null until every stage has been measured here"
    )
    stages: dict[str, float | None] = Field(
        description="Expected seconds of each stage, in pipeline order: training from the measured tokens per "
        "second, the others from their measured durations (medians of recent runs); null: never measured"
    )
    tokens_per_second: float | None = Field(description="Training throughput measured on this deployment (median)")
    measured_training_runs: int = Field(description="Finished training stages that median is of")


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: EventLevel
    message: str
    type: EventType = "message"
    data: dict[str, Any] | None = Field(
        None,
        description="metrics events: step, train_loss, train_mean_token_accuracy, valid_loss and "
        "valid_mean_token_accuracy (checkpoint steps of a job with a validation file), and guardtune's "
        "kl, kl_weight (mean over the step's examples), kl_weight_flagged and kl_weight_unflagged "
        "(mean w_kl of the step's examples the scan flagged / did not flag; null if none), risk",
    )


class CheckpointMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class SafetyReport(BaseModel):
    """guardtune extension: everything the safety pipeline recorded about a job."""

    object: Literal["fine_tuning.job.safety_report"] = "fine_tuning.job.safety_report"
    job_id: str
    status: JobStatus
    stage: str | None = None
    config: dict[str, Any]
    scan: dict[str, Any] | None = Field(None, description="Dataset risk scan: counts by score, flagged lines")
    training: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = Field(
        None,
        description="ASR base vs fine-tuned on plain prompts (base, tuned), utility, and `conditions`: one row per "
        "attack condition (plain, the training file's system prompts, candidate backdoor triggers) with ASR per category",
    )
    gate: dict[str, Any] | None = Field(
        None, description="Release decision and its reasons; each ASR check names its worst condition"
    )
    fine_tuned_model: str | None = None
    updated_at: int | None = None
