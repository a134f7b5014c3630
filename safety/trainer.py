"""LoRA fine-tuning with the risk-adaptive KL objective, as one explicit training loop.

Each optimizer step takes the next ``batch_size × grad_accum_steps`` examples of a
seeded per-epoch shuffle, turns each example's pre-computed risk (1–5) into its own loss
weights (``risk_weighting="example"``, the default; ``"batch"`` gives every example the
weights of the batch's mean risk, the paper's code as an ablation), and minimises
``Σ_i [w_sft_i · CE_i + w_kl_i · KL_i] / N`` (``objective.weighted_loss``). The reference
policy P_ref is the same model with the LoRA adapter disabled; with ``reference="exact"`` its
forward pass runs every micro-batch (skipped when all its examples have ``w_kl == 0``); with
``reference="cached"`` it never runs here: the KL is taken against the reference's top-k
log-probabilities computed once beforehand (``safety.reference``, a lower bound of the exact KL). Everything the worker needs to report, checkpoint, cancel and resume
goes through ``train``'s arguments; nothing here knows about databases or queues.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from core.jobs import config as defaults
from core.jobs.config import ReferenceMode, RiskWeighting, SafetyMode
from safety.checkpoints import (
    ADAPTER_WEIGHTS_FILE,
    load_adapter,
    read_trainer_state,
    restore_checkpoint,
    write_checkpoint,
)
from safety.data import IGNORE_INDEX, EncodedExample, collate, encode_example
from safety.objective import (
    ReferenceTopK,
    RiskReduce,
    batch_risk,
    example_sums,
    kl_weights,
    token_kl,
    weighted_loss,
)  # fmt: skip
from safety.reference import ReferenceCache
from safety.scan import ScanConfig
from safety.validation import token_accuracy_counts, validation_pass

# Config fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = frozenset({"checkpoint_every"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. ``mode``: ``none`` = standard SFT;
    ``constant`` = ``w_kl = constant_kl_weight``, ``w_sft = 1 − w_kl``; ``adaptive`` = the
    paper's risk-set weights (``objective.kl_weights`` with the ``kl_*`` / ``sft_*`` bounds),
    from each example's own risk (``risk_weighting="example"``) or from the step's
    ``risk_reduce`` of its examples' risks (``"batch"``)."""

    mode: SafetyMode = defaults.DEFAULT_MODE
    constant_kl_weight: float = defaults.CONSTANT_KL_WEIGHT
    kl_lo: float = defaults.KL_WEIGHT_LO
    kl_hi: float = defaults.KL_WEIGHT_HI
    sft_lo: float = defaults.SFT_WEIGHT_LO
    sft_hi: float = defaults.SFT_WEIGHT_HI
    risk_weighting: RiskWeighting = defaults.DEFAULT_RISK_WEIGHTING
    risk_reduce: RiskReduce = "mean"
    reference: ReferenceMode = "exact"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    n_epochs: int = defaults.TARGET_EPOCHS
    batch_size: int = 4
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.03
    lr_schedule: Literal["linear", "cosine"] = "linear"
    max_seq_len: int = 1024
    seed: int = 0
    checkpoint_every: int = 50  # optimizer steps; 0 = only at the end

    def __post_init__(self) -> None:
        if self.mode not in ("none", "constant", "adaptive"):
            raise ValueError(f"unknown training mode {self.mode!r}")
        if self.risk_weighting not in ("example", "batch"):
            raise ValueError(f"unknown risk weighting {self.risk_weighting!r}")
        if self.reference not in ("exact", "cached"):
            raise ValueError(f"unknown reference {self.reference!r}")
        if min(self.batch_size, self.grad_accum_steps, self.n_epochs, self.max_seq_len) < 1:
            raise ValueError("batch_size, grad_accum_steps, n_epochs and max_seq_len must be ≥ 1")
        if not 0.0 <= self.constant_kl_weight <= 1.0:
            raise ValueError("constant_kl_weight must be in [0, 1]")

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum_steps


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step did. ``step`` and ``epoch`` count from 1. ``loss`` is the
    step's objective; ``sft_loss`` and ``kl`` are unweighted means over its answer tokens
    (``kl`` over those of micro-batches that ran the reference pass; ``None`` if none did;
    with ``reference="cached"`` it is the cached, lower-bound KL).
    ``kl_weight``/``sft_weight`` are the means over the step's examples; ``kl_weight_flagged``
    and ``kl_weight_unflagged`` the mean ``w_kl`` of its flagged / unflagged examples
    (``None`` when it has none). ``risk`` is the ``risk_reduce`` of the examples' risks.
    ``tokens`` counts non-padding input tokens. ``train_accuracy`` is the step's token
    accuracy (from the training logits); ``valid_loss`` / ``valid_accuracy`` are set on
    checkpoint steps of a run with validation examples (``safety.validation``)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    sft_loss: float
    kl: float | None
    kl_weight: float
    sft_weight: float
    risk: float
    kl_weight_flagged: float | None
    kl_weight_unflagged: float | None
    tokens: int
    tokens_per_s: float
    lr: float
    train_accuracy: float | None = None
    valid_loss: float | None = None
    valid_accuracy: float | None = None


@dataclass
class RunSummary:
    """Running totals over completed steps (kept in checkpoints so resumed runs report the
    same summary as uninterrupted ones)."""

    steps: int = 0
    risk_sum: float = 0.0
    regularized_steps: int = 0
    loss_sum: float = 0.0
    trained_tokens: int = 0
    final_kl: float | None = None
    flagged_kl_weight_sum: float = 0.0
    flagged_examples: int = 0
    unflagged_kl_weight_sum: float = 0.0
    unflagged_examples: int = 0

    def add(self, metrics: StepMetrics, kl_weights: list[float], flagged: list[bool]) -> None:
        """Count a completed step whose examples had ``kl_weights`` and scan flags ``flagged``."""
        for w_kl, is_flagged in zip(kl_weights, flagged, strict=True):
            if is_flagged:
                self.flagged_kl_weight_sum += w_kl
                self.flagged_examples += 1
            else:
                self.unflagged_kl_weight_sum += w_kl
                self.unflagged_examples += 1
        self.steps += 1
        self.risk_sum += metrics.risk
        self.regularized_steps += metrics.kl_weight > 0
        self.loss_sum += metrics.loss
        self.trained_tokens += metrics.tokens
        if metrics.kl is not None:
            self.final_kl = metrics.kl

    def report(self) -> dict[str, Any]:
        """``mean_risk``, ``regularized_share`` (steps with ``w_kl > 0``), ``final_kl`` (last
        measured; ``None`` if never), ``mean_loss``, ``trained_tokens``, ``steps``, and
        ``mean_kl_weight_flagged`` / ``_unflagged``: the mean ``w_kl`` at which flagged /
        unflagged examples were trained, over every time one was (``None`` if never)."""
        n = max(self.steps, 1)
        return {
            "mean_risk": self.risk_sum / n,
            "regularized_share": self.regularized_steps / n,
            "final_kl": self.final_kl,
            "mean_loss": self.loss_sum / n,
            "trained_tokens": self.trained_tokens,
            "steps": self.steps,
            "mean_kl_weight_flagged": _ratio(self.flagged_kl_weight_sum, self.flagged_examples),
            "mean_kl_weight_unflagged": _ratio(self.unflagged_kl_weight_sum, self.unflagged_examples),
        }


@dataclass(frozen=True)
class TrainResult:
    """``steps`` completed of ``total_steps``; ``model`` is the LoRA-wrapped model as trained
    (eval mode); ``adapter_dir`` holds the final adapter (PEFT format, no optimizer state) and
    is ``None`` when cancelled or paused; ``checkpoint_dir`` is the last checkpoint written by
    this call, if any; ``paused``: stopped on ``should_pause`` with the state checkpointed."""

    model: PeftModel
    steps: int
    total_steps: int
    cancelled: bool
    adapter_dir: Path | None
    checkpoint_dir: Path | None
    summary: dict[str, Any] = field(default_factory=dict)
    paused: bool = False


def train(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, Any]],
    risks: list[float],
    config: TrainConfig,
    *,
    work_dir: Path,
    on_step: Callable[[StepMetrics], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    save_checkpoint: Callable[[int, Path, StepMetrics], None] | None = None,
    resume_dir: Path | None = None,
    flagged: list[bool] | None = None,
    should_pause: Callable[[], bool] | None = None,
    validation: list[dict[str, Any]] | None = None,
    reference_cache: ReferenceCache | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``examples`` (OpenAI chat or prompt/completion dicts) whose
    risks (1–5, aligned with ``examples``) were scored beforehand. ``flagged`` (aligned too)
    says which examples the scan flagged, for the per-step metrics only; by default those with
    a risk at or above the scan's default flag threshold.

    ``model`` is the base model, wrapped here with a fresh LoRA adapter (modified in place:
    load a fresh base model per run), or — only with ``resume_dir`` — either a base model or a
    trainable ``PeftModel`` with the same adapter layout. ``resume_dir`` is a checkpoint
    written by an earlier call with the same config, examples and risks; the run continues
    after its step and reproduces the uninterrupted run's losses.

    ``should_cancel`` is polled before every step; when it returns true, training stops
    before that step and returns ``cancelled=True``. ``should_pause`` is polled next; when it
    returns true, the state after the last completed step is checkpointed (unless that step's
    checkpoint exists) and training returns ``paused=True``: resuming from that checkpoint
    continues as if never paused. Every ``config.checkpoint_every`` steps
    and after the last step a checkpoint is written under ``work_dir/checkpoints/`` and passed
    to ``save_checkpoint(step, dir, metrics)``; with ``validation`` examples, those steps'
    metrics carry the validation pass's loss and token accuracy. ``reference_cache`` (required
    when ``config.reference == "cached"`` and the mode regularizes) holds the reference's top-k
    log-probs of ``examples`` (``safety.reference.compute_reference_cache`` with the same
    ``max_seq_len``). The final adapter goes to
    ``work_dir/adapter``. The trained model is returned in ``TrainResult.model``, in eval mode.
    """
    if len(examples) != len(risks) or not examples:
        raise ValueError(f"need one risk per example, got {len(examples)} examples and {len(risks)} risks")
    if flagged is None:
        flagged = [risk >= ScanConfig.flag_threshold for risk in risks]
    work_dir = Path(work_dir)
    encoded = [encode_example(tokenizer, example, config.max_seq_len) for example in examples]
    encoded_valid = [encode_example(tokenizer, example, config.max_seq_len) for example in validation or []]
    fingerprint = _data_fingerprint(encoded, risks)
    cache = reference_cache if config.reference == "cached" and config.mode != "none" else None
    if cache is None and config.reference == "cached" and config.mode != "none":
        raise ValueError('reference="cached" needs the reference_cache of these examples')
    if cache is not None:
        cache.check(encoded)
    steps_per_epoch = math.ceil(len(encoded) / config.examples_per_step)
    total_steps = steps_per_epoch * config.n_epochs

    model = _with_lora(model, config, resume_dir)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_schedule,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    summary = RunSummary()
    start_step = 0
    if resume_dir is not None:
        state = read_trainer_state(resume_dir)
        _check_resumable(state, config, fingerprint)
        restore_checkpoint(resume_dir, optimizer, scheduler)
        start_step = state["step"]
        summary = RunSummary(**state["summary"])

    def checkpoint(done: int, metrics: StepMetrics) -> Path:
        """Write the state after ``done`` steps and hand it to ``save_checkpoint``."""
        epoch, step_in_epoch = divmod(done - 1, steps_per_epoch)
        last_batch = _step_indices(len(encoded), config, epoch, step_in_epoch)
        trainer_state = {
            "step": done,
            "epoch": epoch + 1,
            "data_position": {"epoch": epoch + 1, "step_in_epoch": step_in_epoch + 1, "last_batch": last_batch},
            "total_steps": total_steps,
            "config": asdict(config),
            "data_fingerprint": fingerprint,
            "summary": asdict(summary),
        }
        path = write_checkpoint(work_dir / "checkpoints" / f"step-{done:06d}", model, optimizer, scheduler, trainer_state)
        if save_checkpoint is not None:
            save_checkpoint(done, path, metrics)
        return path

    checkpoint_dir = None
    metrics: StepMetrics | None = None
    model.train()
    for step in range(start_step, total_steps):
        if should_cancel is not None and should_cancel():
            model.eval()
            return TrainResult(model, step, total_steps, True, None, checkpoint_dir, summary.report())
        if should_pause is not None and should_pause():
            # Steps done in this call and not checkpointed yet: save them (none done: the
            # resume checkpoint, or nothing at all, already describes this state).
            if metrics is not None and (checkpoint_dir is None or checkpoint_dir.name != f"step-{step:06d}"):
                checkpoint_dir = checkpoint(step, metrics)
            model.eval()
            return TrainResult(model, step, total_steps, False, None, checkpoint_dir, summary.report(), paused=True)
        started = time.perf_counter()
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        indices = _step_indices(len(encoded), config, epoch, step_in_epoch)
        weights = _example_weights(config, [risks[i] for i in indices])
        refs = cache.rows if cache is not None else None
        sums = _accumulate_gradients(model, tokenizer, encoded, indices, weights, config.batch_size, refs)

        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        elapsed = time.perf_counter() - started
        w_sft = [w for w, _ in weights]
        w_kl = [w for _, w in weights]
        metrics = StepMetrics(
            step=step + 1,
            total_steps=total_steps,
            epoch=epoch + 1,
            loss=sums["loss"],
            sft_loss=sums["ce"] / max(sums["answer_tokens"], 1),
            kl=sums["kl"] / sums["kl_tokens"] if sums["kl_tokens"] else None,
            kl_weight=_mean(w_kl),
            sft_weight=_mean(w_sft),
            risk=batch_risk([risks[i] for i in indices], config.risk_reduce),
            kl_weight_flagged=_mean([w for w, i in zip(w_kl, indices) if flagged[i]]),
            kl_weight_unflagged=_mean([w for w, i in zip(w_kl, indices) if not flagged[i]]),
            tokens=sums["tokens"],
            tokens_per_s=sums["tokens"] / elapsed if elapsed > 0 else 0.0,
            lr=lr,
            train_accuracy=sums["correct"] / max(sums["labelled"], 1),
        )
        summary.add(metrics, w_kl, [flagged[i] for i in indices])
        done = step + 1
        at_checkpoint = done == total_steps or (config.checkpoint_every and done % config.checkpoint_every == 0)
        if at_checkpoint and encoded_valid:
            metrics = _with_validation(metrics, model, encoded_valid, tokenizer.pad_token_id, config.batch_size)
        if on_step is not None:
            on_step(metrics)
        if at_checkpoint:
            checkpoint_dir = checkpoint(done, metrics)

    model.eval()
    adapter_dir = work_dir / "adapter"
    model.save_pretrained(adapter_dir, safe_serialization=True)
    return TrainResult(model, total_steps, total_steps, False, adapter_dir, checkpoint_dir, summary.report())


@torch.no_grad()
def mean_kl(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]], *, max_seq_len: int = 1024
) -> float:
    """Mean over ``examples`` (each weighted equally) of ``KL(P_ref ‖ P_θ)`` on their assistant
    tokens, P_ref being ``model`` with its adapter disabled: how far fine-tuning moved the
    model on that data. Runs one example at a time (no padding effects)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for example in examples:
        encoded = encode_example(tokenizer, example, max_seq_len)
        batch = {k: v.to(device) for k, v in collate([encoded], tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs).logits
        with model.disable_adapter():
            ref_logits = model(**inputs).logits
        total += token_kl(ref_logits, logits, batch["labels"]).item()
    model.train(was_training)
    return total / len(examples)


def _with_validation(
    metrics: StepMetrics, model: PeftModel, encoded: list[EncodedExample], pad_token_id: int, batch_size: int
) -> StepMetrics:
    """``metrics`` with the validation pass's loss and token accuracy."""
    result = validation_pass(model, encoded, pad_token_id, batch_size)
    return replace(metrics, valid_loss=result.loss, valid_accuracy=result.mean_token_accuracy)


def lora_config(config: TrainConfig) -> LoraConfig:
    """The PEFT ``LoraConfig`` of a training config."""
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _with_lora(model: PreTrainedModel | PeftModel, config: TrainConfig, resume_dir: Path | None) -> PeftModel:
    """A trainable LoRA model: fresh adapter (initialised from ``config.seed``), or the
    checkpoint's adapter when resuming."""
    if resume_dir is None:
        if isinstance(model, PeftModel):
            raise TypeError("pass the base model; a PeftModel is accepted only when resuming")
        torch.manual_seed(config.seed)
        return get_peft_model(model, lora_config(config))
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(str(Path(resume_dir) / ADAPTER_WEIGHTS_FILE)))
        return model
    return load_adapter(model, resume_dir, trainable=True)


def _loss_weights(config: TrainConfig, risk: float) -> tuple[float, float]:
    """``(w_sft, w_kl)`` of risk ``risk`` under ``config.mode``."""
    if config.mode == "none":
        return 1.0, 0.0
    if config.mode == "constant":
        return 1.0 - config.constant_kl_weight, config.constant_kl_weight
    return kl_weights(risk, config.kl_lo, config.kl_hi, config.sft_lo, config.sft_hi)


def _example_weights(config: TrainConfig, risks: list[float]) -> list[tuple[float, float]]:
    """``(w_sft, w_kl)`` of each example of a step: from its own risk, or (``"batch"``) all
    from the step's ``risk_reduce`` of the risks."""
    if config.risk_weighting == "batch":
        return [_loss_weights(config, batch_risk(risks, config.risk_reduce))] * len(risks)
    return [_loss_weights(config, risk) for risk in risks]


def _accumulate_gradients(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: list[EncodedExample],
    indices: list[int],
    weights: list[tuple[float, float]],
    batch_size: int,
    cached_rows: Callable[[list[int]], ReferenceTopK] | None = None,
) -> dict[str, float]:
    """Forward and backward the step's examples (``encoded[i]`` for ``i`` in ``indices``) in
    micro-batches of ``batch_size``, the reference from ``cached_rows(indices)`` when given
    (else its forward pass), accumulating the gradient of ``weighted_loss`` normalised by the step's answer tokens.
    Returns the step's sums: ``loss``, ``ce``, ``kl`` (over ``kl_tokens``, the answer tokens
    of micro-batches with a reference pass), ``answer_tokens``, input ``tokens``, and the
    ``correct`` / ``labelled`` next-token counts of the training logits (token accuracy)."""
    device = next(model.parameters()).device
    examples = [encoded[i] for i in indices]
    n_answer = sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples)
    sums = {"loss": 0.0, "ce": 0.0, "kl": 0.0, "kl_tokens": 0, "answer_tokens": n_answer, "tokens": 0,
            "correct": 0, "labelled": 0}
    for start in range(0, len(examples), batch_size):
        micro = examples[start : start + batch_size]
        w_sft, w_kl = torch.tensor(weights[start : start + batch_size], device=device).unbind(-1)
        batch = {k: v.to(device) for k, v in collate(micro, tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        ref_logits = ref_topk = None
        if bool((w_kl > 0).any()):
            if cached_rows is not None:
                ref_topk = cached_rows(indices[start : start + batch_size])
            else:
                with torch.no_grad(), model.disable_adapter(), _autocast(device):
                    ref_logits = model(**inputs).logits
        with _autocast(device):
            logits = model(**inputs).logits
        ce, kl, answer_tokens = example_sums(logits, batch["labels"], ref_logits, ref_topk)
        correct, labelled = token_accuracy_counts(logits.detach(), batch["labels"])
        sums["correct"] += correct
        sums["labelled"] += labelled
        loss = weighted_loss(ce, kl, w_sft, w_kl, n_answer)
        loss.backward()
        sums["loss"] += loss.item()
        sums["ce"] += ce.sum().item()
        if kl is not None:
            sums["kl"] += kl.sum().item()
            sums["kl_tokens"] += int(answer_tokens.sum())
        sums["tokens"] += int(batch["attention_mask"].sum())
    return sums


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (fp32 weights and LoRA, bf16 matmuls); nothing elsewhere. The
    losses are computed in fp32 either way (``objective`` upcasts the logits)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _mean(values: list[float]) -> float | None:
    return _ratio(sum(values), len(values))


def _ratio(total: float, n: int) -> float | None:
    return total / n if n else None


def _step_indices(n_examples: int, config: TrainConfig, epoch: int, step_in_epoch: int) -> list[int]:
    """Example indices of one optimizer step: a slice of epoch ``epoch``'s shuffle, which is a
    pure function of ``(config.seed, epoch)`` so resumed runs see the same batches."""
    order = np.random.default_rng([config.seed, epoch]).permutation(n_examples)
    start = step_in_epoch * config.examples_per_step
    return order[start : start + config.examples_per_step].tolist()


def _data_fingerprint(encoded: list[EncodedExample], risks: list[float]) -> str:
    digest = hashlib.sha256()
    for example, risk in zip(encoded, risks, strict=True):
        digest.update(json.dumps([example.input_ids, example.labels, risk]).encode())
    return digest.hexdigest()


def _check_resumable(state: dict[str, Any], config: TrainConfig, fingerprint: str) -> None:
    """Refuse to resume a checkpoint written for other data or another config."""
    if state["data_fingerprint"] != fingerprint:
        raise ValueError("checkpoint was written for other training data or risks")
    current = json.loads(json.dumps(asdict(config)))
    saved = {**json.loads(json.dumps(asdict(TrainConfig()))), **state["config"]}  # fields added since: defaults
    changed = sorted(k for k in current.keys() - RESUMABLE_CHANGES if saved.get(k) != current[k])
    if changed:
        raise ValueError(f"checkpoint was written with a different config: {', '.join(changed)}")

