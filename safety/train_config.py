"""What a training run is asked to do (:class:`TrainConfig`) and how it ended (:class:`TrainResult`).

``safety.trainer`` runs the loop; ``safety.train_state`` and ``safety.train_step`` read the
config; all three import it from here, below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.jobs import config as defaults
from core.jobs.vocab import Objective, ReferenceMode, RiskWeighting, SafetyMode

if TYPE_CHECKING:
    from peft import PeftModel

    from safety.objective import RiskReduce


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. ``mode``: ``none`` = standard SFT;
    ``constant`` = ``w_kl = constant_kl_weight``, ``w_sft = 1 − w_kl``; ``adaptive`` = the
    paper's risk-set weights (``objective.kl_weights`` with the ``kl_weight_*`` /
    ``sft_weight_*`` bounds), from each example's own risk (``risk_weighting="example"``) or
    from the step's ``risk_reduce`` of its examples' risks (``"batch"``). ``objective``
    (``adaptive`` only): ``paper`` = those weights in the loss as written; ``bounded`` = w_sft 0
    at risks ≥ ``sft_cutoff_risk`` and each step's learning rate scaled by its SFT budget
    (``safety.objective``'s docstring says why). ``mode``, ``risk_weighting``, ``objective`` and
    ``reference`` may be given as their enums' string values; they are held as the enums.

    A step's ``examples_per_step`` examples are its optimizer batch; how they are split into
    micro-batches (``batch_size`` at a time, or by ``micro_batch_tokens``) and whether
    activations are recomputed (``activation_checkpointing``) change the memory a step needs,
    not what it computes (within float rounding): a run may resume with other values.

    ``method``: ``supervised`` trains on chat / prompt-completion examples with the objective
    above; ``dpo`` on preference pairs with ``safety.dpo``'s objective (DPO's sigmoid loss at
    ``dpo_beta`` in place of the cross-entropy, the same weights): an example is then a
    pair and ``batch_size`` counts pairs."""

    mode: SafetyMode = defaults.DEFAULT_MODE
    constant_kl_weight: float = defaults.CONSTANT_KL_WEIGHT
    kl_weight_min: float = defaults.KL_WEIGHT_MIN
    kl_weight_max: float = defaults.KL_WEIGHT_MAX
    sft_weight_min: float = defaults.SFT_WEIGHT_MIN
    sft_weight_max: float = defaults.SFT_WEIGHT_MAX
    risk_weighting: RiskWeighting = defaults.DEFAULT_RISK_WEIGHTING
    risk_reduce: RiskReduce = "mean"
    objective: Objective = defaults.DEFAULT_OBJECTIVE
    sft_cutoff_risk: float = defaults.FLAG_THRESHOLD  # bounded: w_sft = 0 at or above this risk
    reference: ReferenceMode = ReferenceMode.EXACT
    method: Literal["supervised", "dpo"] = "supervised"
    dpo_beta: float = defaults.AUTO_DPO_BETA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = defaults.BASE_LEARNING_RATE
    weight_decay: float = 0.0
    n_epochs: int = defaults.TARGET_EPOCHS
    batch_size: int = defaults.AUTO_BATCH_SIZE  # a job's "auto" (the worker passes the job's resolved size)
    grad_accum_steps: int = 1
    # The padded tokens of one micro-batch (``safety.batching``); None: micro-batches of batch_size.
    micro_batch_tokens: int | None = None
    activation_checkpointing: bool = False  # recompute each layer's activations in the backward pass
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.03
    lr_schedule: Literal["linear", "cosine"] = "linear"
    max_seq_len: int = 1024
    seed: int = 0
    checkpoint_every: int = defaults.CHECKPOINT_EVERY  # optimizer steps; 0 = only at the end
    keep_checkpoints: int = 0  # newest checkpoints kept under work_dir/checkpoints; 0 = all

    def __post_init__(self) -> None:
        _set_enum(self, "mode", SafetyMode, "unknown training mode")
        _set_enum(self, "risk_weighting", RiskWeighting, "unknown risk weighting")
        _set_enum(self, "objective", Objective, "unknown objective")
        _set_enum(self, "reference", ReferenceMode, "unknown reference")
        if min(self.batch_size, self.grad_accum_steps, self.n_epochs, self.max_seq_len) < 1:
            raise ValueError("batch_size, grad_accum_steps, n_epochs and max_seq_len must be ≥ 1")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be ≥ 1")
        if not 0.0 <= self.constant_kl_weight <= 1.0:
            raise ValueError("constant_kl_weight must be in [0, 1]")
        if self.method not in ("supervised", "dpo"):
            raise ValueError(f"unknown method {self.method!r}")
        if self.method == "dpo" and (self.reference != ReferenceMode.EXACT or self.dpo_beta <= 0):
            raise ValueError('dpo needs reference="exact" and dpo_beta > 0')

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum_steps


def _set_enum(config: TrainConfig, name: str, enum: type[StrEnum], unknown: str) -> None:
    """Hold ``config.<name>`` as a member of ``enum``; ``ValueError("<unknown> '<value>'")``
    when it is none of its values."""
    value = getattr(config, name)
    try:
        object.__setattr__(config, name, enum(value))
    except ValueError:
        raise ValueError(f"{unknown} {value!r}") from None


class TrainOutcome(StrEnum):
    """How ``safety.trainer.train`` returned."""

    COMPLETED = "completed"  # every step done, the final adapter written
    CANCELLED = "cancelled"  # ``should_cancel`` stopped it before a step
    PAUSED = "paused"  # ``should_pause`` stopped it, the state after the last step checkpointed


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """``steps`` completed of ``total_steps``; ``model`` is the LoRA-wrapped model as trained
    (eval mode); ``adapter_dir`` holds the final adapter (PEFT format, no optimizer state) and
    is ``None`` unless ``outcome`` is ``completed``; ``checkpoint_dir`` is the last checkpoint
    written by this call, if any; ``summary`` is ``train_metrics.RunSummary.report()``."""

    model: PeftModel
    outcome: TrainOutcome
    steps: int
    total_steps: int
    adapter_dir: Path | None
    checkpoint_dir: Path | None
    summary: dict[str, Any] = field(default_factory=dict)
