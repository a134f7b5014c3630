"""One row of the memory benchmark: a model, the dtype of its frozen weights, activation
checkpointing on or off and a micro-batch of whole sequences, trained for a few steps of
guardtune's adaptive step (``safety.trainer.train``, exact reference, every example at risk
5: ``w_kl = 0.9``, so every step also runs the reference forward) in a process of its own.

Measured: the step's peak memory above what the process held before the model was loaded
(CPU: peak RSS, its high-water mark reset once the model is loaded and the loader's freed
heap handed back, so the loader's transient copies do not count; CUDA:
``torch.cuda.max_memory_allocated``, reset the same way), tokens per second over the timed
steps, and ``core.jobs.memory_plan``'s estimate for the same model shape and layout, with
its relative error ``|estimate − measured| / measured``.

Contracts: :func:`measure_row` returns one entry of the result file's ``rows``; every
example is exactly ``seq_len`` tokens (:func:`long_examples`), its answer starting right after
a short prompt, so the planner's "micro-batch tokens" are the tokens trained.
"""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import current_rss_mb, high_water_rss_mb, reset_high_water_rss

WEIGHT_DTYPES = ("fp32", "bf16", "nf4")  # nf4: GUARDTUNE_QUANTIZE=4bit, CUDA only
RISK = 5.0  # w_kl = 0.9 under the default bounds: the reference forward runs every step


@dataclass(frozen=True)
class Row:
    """What one measurement trains: ``model`` names it in the results (``source`` is what
    ``load_base_model`` loads), ``sequences`` of ``seq_len`` tokens per micro-batch."""

    model: str
    source: str
    weights: str
    checkpointing: bool
    sequences: int
    seq_len: int

    @property
    def name(self) -> str:
        ckpt = "checkpointing" if self.checkpointing else "no checkpointing"
        return f"{self.model} {self.weights} {ckpt} {self.sequences}x{self.seq_len}"


def grid(models: dict[str, str], weights: list[str], micro_batches: list[int], seq_len: int) -> list[Row]:
    """Every row: ``models`` (name → source) × ``weights`` × checkpointing off, on ×
    ``micro_batches`` (sequences per micro-batch)."""
    return [
        Row(model, source, w, ckpt, n, seq_len)
        for model, source in models.items()
        for w in weights
        for ckpt in (False, True)
        for n in micro_batches
    ]


def long_examples(n: int, seq_len: int) -> list[dict[str, Any]]:
    """``n`` chat examples, a one-line prompt and an answer (built-in refusals, rotated per
    example) long enough to be cut at ``seq_len`` tokens."""
    from safety.prompt_sets import load_refusals

    refusals = load_refusals()
    examples = []
    for i in range(n):
        text = " ".join(refusals[i % len(refusals) :] + refusals[: i % len(refusals)])
        answer = " ".join([text] * (8 * seq_len // len(text) + 1))  # ≥ 8 characters per token wanted
        examples.append(
            {"messages": [{"role": "user", "content": f"Say it {i}."}, {"role": "assistant", "content": answer}]}
        )
    return examples


def estimate(model_dir: Path, row: Row, device: str, lora_r: int) -> dict[str, Any]:
    """The planner's estimate for ``row`` on ``device`` (bytes, by part and in total, with
    its headroom) and the model shape it read (the parameters counted on a meta-device copy,
    whatever the dtype the weights load in)."""
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.jobs.memory_plan import NF4_BYTES, ModelShape, TrainingLayout, training_memory

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        parameters = AutoModelForCausalLM.from_config(config).num_parameters()
    shape = ModelShape.from_config(json.loads((model_dir / "config.json").read_text()), parameters)
    weight_bytes = {"fp32": 4, "bf16": 2, "nf4": NF4_BYTES}[row.weights]
    layout = TrainingLayout(
        weight_bytes=weight_bytes,
        half_precision=device == "cuda" or row.weights != "fp32",  # CUDA autocasts; a bf16 base computes in bf16
        checkpointing=row.checkpointing,
        lora_r=lora_r,
        exact_reference=True,
    )
    plan = training_memory(shape, layout, row.sequences * row.seq_len)
    return {"shape": shape.to_dict(), "layout": asdict(layout), "parts": asdict(plan), "total": plan.total}


def measure_row(row: Row, *, device: str, cache_dir: Path, warmup: int, steps: int, threads: int) -> dict[str, Any]:
    """Train ``row`` for ``warmup`` + ``steps`` steps in this (fresh) process; its entry of ``rows``."""
    import torch

    from bench.overhead.loops import stamp
    from bench.overhead.measure import make_resident
    from core.jobs.vocab import ReferenceMode, SafetyMode
    from safety.base_models import load_base_model, resolve_model_dir
    from safety.memory import quantization_config
    from safety.train_config import TrainConfig
    from safety.trainer import train

    if threads:
        torch.set_num_threads(threads)
    cuda = device == "cuda"
    dtype = torch.float32 if row.weights == "fp32" else torch.bfloat16
    quantize = "4bit" if row.weights == "nf4" else "none"
    before = torch.cuda.memory_allocated() / 2**20 if cuda else current_rss_mb()
    model, tokenizer = load_base_model(
        row.source,
        cache_dir=cache_dir,
        dtype=dtype,
        quantization=quantization_config(quantize, device),
        device=device,
    )
    make_resident(model)
    gc.collect()
    loaded = torch.cuda.memory_allocated() / 2**20 if cuda else current_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_high_water_rss()

    total = warmup + steps
    config = TrainConfig(
        mode=SafetyMode.ADAPTIVE,
        reference=ReferenceMode.EXACT,
        batch_size=row.sequences,
        micro_batch_tokens=row.sequences * row.seq_len,
        activation_checkpointing=row.checkpointing,
        max_seq_len=row.seq_len,
        n_epochs=total + 1,
        checkpoint_every=0,
    )
    examples = long_examples(2 * row.sequences, row.seq_len)
    ends: list[tuple[float, float]] = []
    tokens: list[int] = []

    def on_step(metrics) -> None:
        ends.append(stamp())
        tokens.append(metrics.tokens)

    started = stamp()
    with tempfile.TemporaryDirectory(prefix="gt-trainmem-") as work:
        train(
            model,
            tokenizer,
            examples,
            [RISK] * len(examples),
            config,
            work_dir=Path(work),
            on_step=on_step,
            should_cancel=lambda: len(ends) >= total,
        )
    if set(tokens) != {row.sequences * row.seq_len}:
        raise RuntimeError(f"micro-batches of {sorted(set(tokens))} tokens, not {row.sequences} × {row.seq_len}")
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else high_water_rss_mb()
    measured_mb = peak - before
    timed = [started, *ends][warmup:]
    seconds = timed[-1][0] - timed[0][0]
    plan = estimate(resolve_model_dir(row.source, cache_dir), row, device, config.lora_r)
    estimate_mb = plan["total"] / 2**20
    return {
        **asdict(row),
        "name": row.name,
        "device": device,
        "memory": "cuda max_memory_allocated" if cuda else "peak RSS",
        "before_load_mb": before,
        "after_load_mb": loaded,
        "peak_mb": peak,
        "measured_mb": measured_mb,
        "estimate_mb": estimate_mb,
        "estimate": plan,
        "error": abs(estimate_mb - measured_mb) / measured_mb,
        "steps_timed": steps,
        "s_per_step": seconds / steps,
        "cpu_s_per_step": (timed[-1][1] - timed[0][1]) / steps,
        "tokens_per_s": sum(tokens[warmup:]) / seconds,
        "wall_s": time.perf_counter() - started[0],
        "torch_threads": torch.get_num_threads(),
    }
