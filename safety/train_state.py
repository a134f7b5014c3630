"""A training run's state: set up (fresh or resumed from a checkpoint) and checkpointed.

:func:`setup_run` encodes the examples, wraps the model with its LoRA adapter (a fresh
one initialised from ``config.seed``, a released adapter's weights to continue from, or the
checkpoint's), builds the AdamW optimizer
and the LR schedule and, with ``resume_dir``, restores them, the RNG states and the
running summary from a checkpoint written for the same data and config
(:func:`check_resumable`). :func:`write_run_checkpoint` writes the state after a step
(``safety.checkpoints`` holds the on-disk format); resuming from it continues exactly,
each step taking the same examples (:func:`step_indices`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from core.jobs.vocab import ReferenceMode, SafetyMode
from core.preference import pair_chats
from safety import distributed
from safety.checkpoints import (
    ADAPTER_WEIGHTS_FILE,
    load_adapter,
    read_trainer_state,
    restore_checkpoint,
    write_checkpoint,
)
from safety.data import EncodedExample, encode_example
from safety.memory import enable_activation_checkpointing, trainable_base
from safety.reference import ReferenceCache
from safety.scan import ScanConfig
from safety.train_config import TrainConfig
from safety.train_metrics import RunSummary

# Config fields that may differ between a run and its resumption (how often it checkpoints, how
# many checkpoints it keeps, and how a step's examples are laid out in memory: the same
# computation within float rounding).
RESUMABLE_CHANGES = frozenset(
    {"checkpoint_every", "keep_checkpoints", "micro_batch_tokens", "activation_checkpointing"}
)
# Config fields a checkpoint written by an earlier version names otherwise: its name → today's.
RENAMED_FIELDS = {
    "kl_lo": "kl_weight_min",
    "kl_hi": "kl_weight_max",
    "sft_lo": "sft_weight_min",
    "sft_hi": "sft_weight_max",
}


@dataclass
class TrainRun:
    """Everything a run's steps share (``encoded``: ``train_state.encode_all``; ``risks`` and
    ``flagged`` are per example, a DPO pair being one). ``start_step`` is the number of steps already done
    (0, or the resumed checkpoint's step); ``cache`` is the reference cache when the KL
    is taken against it (``reference="cached"`` and a regularizing mode), else ``None``."""

    config: TrainConfig
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    encoded: list[EncodedExample]
    encoded_valid: list[EncodedExample]
    risks: list[float]
    flagged: list[bool]
    cache: ReferenceCache | None
    fingerprint: str
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    total_steps: int
    start_step: int
    summary: RunSummary
    work_dir: Path

    def is_checkpoint_step(self, done: int) -> bool:
        """Whether the state after ``done`` steps is checkpointed (every
        ``config.checkpoint_every`` steps and after the last)."""
        every = self.config.checkpoint_every
        return done == self.total_steps or bool(every and done % every == 0)


def setup_run(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, Any]],
    risks: list[float],
    config: TrainConfig,
    *,
    work_dir: Path,
    resume_dir: Path | None,
    flagged: list[bool] | None,
    validation: list[dict[str, Any]] | None,
    reference_cache: ReferenceCache | None,
    init_adapter: Path | None = None,
) -> TrainRun:
    """The run ``safety.trainer.train`` describes, ready for its first step to do."""
    if len(examples) != len(risks) or not examples:
        raise ValueError(f"need one risk per example, got {len(examples)} examples and {len(risks)} risks")
    if flagged is None:
        flagged = [risk >= ScanConfig.flag_threshold for risk in risks]
    encoded = encode_all(tokenizer, examples, config)
    encoded_valid = encode_all(tokenizer, validation or [], config)
    uses_cache = config.reference == ReferenceMode.CACHED and config.mode != SafetyMode.NONE
    cache = reference_cache if uses_cache else None
    if cache is None and uses_cache:
        raise ValueError('reference="cached" needs the reference_cache of these examples')
    if cache is not None:
        cache.check(encoded)
    per_example = len(encoded) // len(examples)  # a DPO pair is two encoded examples
    fingerprint = _data_fingerprint(encoded, [risk for risk in risks for _ in range(per_example)])
    steps_per_epoch = math.ceil(len(examples) / config.examples_per_step)
    total_steps = steps_per_epoch * config.n_epochs

    model = _with_lora(model, config, resume_dir, init_adapter)
    if config.activation_checkpointing:
        enable_activation_checkpointing(model)
    trainable, optimizer, scheduler = make_optimizer(model, config, total_steps)
    summary = RunSummary()
    start_step = 0
    if resume_dir is not None:
        state = read_trainer_state(resume_dir)
        check_resumable(state, config, fingerprint, cache.k if cache is not None else None)
        restore_checkpoint(resume_dir, optimizer, scheduler, rank=distributed.world().rank)
        start_step = state["step"]
        summary = RunSummary(**state["summary"])
    return TrainRun(
        config=config,
        model=model,
        tokenizer=tokenizer,
        encoded=encoded,
        encoded_valid=encoded_valid,
        risks=risks,
        flagged=flagged,
        cache=cache,
        fingerprint=fingerprint,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        start_step=start_step,
        summary=summary,
        work_dir=Path(work_dir),
    )


def encode_all(
    tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, Any]], config: TrainConfig
) -> list[EncodedExample]:
    """The examples encoded for training; under ``dpo`` each pair as its preferred then its
    non-preferred chat example (``core.preference.pair_chats``), so pair i is ``2i, 2i + 1``."""
    if config.method == "dpo":
        examples = [chat for pair in examples for chat in pair_chats(pair)]
    return [encode_example(tokenizer, example, config.max_seq_len) for example in examples]


def step_indices(n_examples: int, examples_per_step: int, seed: int, step: int) -> list[int]:
    """Example indices of optimizer step ``step`` (0-based): its slice of its epoch's
    shuffle, which is a pure function of ``(seed, epoch)``."""
    steps_per_epoch = -(-n_examples // examples_per_step)
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    start = step_in_epoch * examples_per_step
    return order[start : start + examples_per_step].tolist()


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig, total_steps: int
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, Any]:
    """``(trainable parameters, AdamW over them, the LR schedule over total_steps)``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_schedule,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return trainable, optimizer, scheduler


def checkpoint_name(done: int) -> str:
    """The directory name of the checkpoint after ``done`` steps."""
    return f"step-{done:06d}"


def write_run_checkpoint(run: TrainRun, done: int) -> Path:
    """Write the state after ``done`` steps under ``work_dir/checkpoints/``; its path. Older
    checkpoints there beyond the newest ``config.keep_checkpoints`` are removed. Under
    ``torchrun`` every rank calls it (the checkpoint keeps each rank's RNG state) and rank 0
    writes it; every rank gets its path."""
    ranks = distributed.world()
    rank_rngs = distributed.gather_rng_states() if ranks.size > 1 else None
    epoch, step_in_epoch = divmod(done - 1, run.steps_per_epoch)
    last_batch = step_indices(len(run.risks), run.config.examples_per_step, run.config.seed, done - 1)
    trainer_state = {
        "step": done,
        "epoch": epoch + 1,
        "data_position": {"epoch": epoch + 1, "step_in_epoch": step_in_epoch + 1, "last_batch": last_batch},
        "total_steps": run.total_steps,
        "config": asdict(run.config),
        "data_fingerprint": run.fingerprint,
        "reference_topk": run.cache.k if run.cache is not None else None,
        "summary": asdict(run.summary),
    }
    directory = run.work_dir / "checkpoints" / checkpoint_name(done)
    if not ranks.is_main:
        return directory
    written = write_checkpoint(directory, run.model, run.optimizer, run.scheduler, trainer_state, rank_rngs)
    prune_checkpoints(directory.parent, run.config.keep_checkpoints)
    return written


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Remove the checkpoint directories under ``root`` (:func:`checkpoint_name`) but the
    newest ``keep`` (0: remove none); the removed ones, oldest first."""
    if keep <= 0:
        return []
    steps = sorted((int(path.name.removeprefix("step-")), path) for path in root.glob("step-*") if path.is_dir())
    removed = [path for _, path in steps[:-keep]]
    for path in removed:
        shutil.rmtree(path)
    return removed


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


def _with_lora(
    model: PreTrainedModel | PeftModel, config: TrainConfig, resume_dir: Path | None, init_adapter: Path | None
) -> PeftModel:
    """A trainable LoRA model: a fresh adapter (initialised from ``config.seed``), or a copy of
    the adapter in ``init_adapter`` (continued training: its weights and LoRA layout), or the
    checkpoint's adapter when resuming (which wins over ``init_adapter``: the checkpoint
    already started from it). A 4-bit base is prepared for it first (``memory.trainable_base``)."""
    if resume_dir is None:
        if isinstance(model, PeftModel):
            raise TypeError("pass the base model; a PeftModel is accepted only when resuming")
        torch.manual_seed(config.seed)
        if init_adapter is not None:
            return load_adapter(trainable_base(model), init_adapter, trainable=True)
        return get_peft_model(trainable_base(model), lora_config(config))
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(str(Path(resume_dir) / ADAPTER_WEIGHTS_FILE)))
        return model
    return load_adapter(trainable_base(model), resume_dir, trainable=True)


def _data_fingerprint(encoded: list[EncodedExample], risks: list[float]) -> str:
    """What a checkpoint's run trained on: tokens, labels and risks."""
    digest = hashlib.sha256()
    for example, risk in zip(encoded, risks, strict=True):
        digest.update(json.dumps([example.input_ids, example.labels, risk]).encode())
    return digest.hexdigest()


def check_resumable(state: dict[str, Any], config: TrainConfig, fingerprint: str, reference_topk: int | None) -> None:
    """Refuse to resume a checkpoint written for other data, another config or, when the KL is
    taken against a cache, a cache of another top-k (another objective). A checkpoint from
    before the top-k was recorded carries none and is checked on data and config only; one
    from before a config field was renamed (:data:`RENAMED_FIELDS`) is read with today's names."""
    if state["data_fingerprint"] != fingerprint:
        raise ValueError("checkpoint was written for other training data or risks")
    saved_topk = state.get("reference_topk", reference_topk)
    if saved_topk != reference_topk:
        raise ValueError(
            f"checkpoint was written against a reference cache of top-k {saved_topk}, this run's has {reference_topk}"
        )
    current = json.loads(json.dumps(asdict(config)))
    written = {RENAMED_FIELDS.get(k, k): v for k, v in state["config"].items()}
    saved = {**json.loads(json.dumps(asdict(type(config)()))), **written}  # fields added since: defaults
    changed = sorted(k for k in current.keys() - RESUMABLE_CHANGES if saved.get(k) != current[k])
    if changed:
        raise ValueError(f"checkpoint was written with a different config: {', '.join(changed)}")
