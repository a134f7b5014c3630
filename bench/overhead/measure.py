"""One variant measured, in the child process: the model loaded (and made resident),
the variant's loop run, its step stamps turned into times per step, tokens per second and
memory.

Contracts: the dict returned is one entry of the result file's ``variants`` (before the
parent's median over repeats); the first ``--warmup`` steps are not timed.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from bench.common import current_rss_mb, peak_rss_mb
from bench.overhead.loops import cached_reference, guardtune, paper_style, plain_sft
from bench.overhead.variants import DATASET_OF, DESCRIPTIONS, build_dataset
from core.jobs.vocab import SafetyMode


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from safety.base_models import DEFAULT_BASE_MODEL, load_base_model
    from safety.train_config import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    rss_start = current_rss_mb()
    t0 = time.perf_counter()
    model, tokenizer = load_base_model(DEFAULT_BASE_MODEL, cache_dir=Path(args.cache_dir))
    model.to(args.device)
    make_resident(model)
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()

    examples = build_dataset(DATASET_OF[variant], args.n_examples)
    total = args.warmup + args.steps
    config = TrainConfig(
        mode=SafetyMode.ADAPTIVE,
        kl_weight_min=0.0 if variant == "c" else 0.1,
        kl_weight_max=0.9,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        n_epochs=math.ceil(total / math.ceil(len(examples) / args.batch_size)) + 1,
        checkpoint_every=0,
    )
    ends: list[tuple[float, float]] = []
    tokens: list[int] = []
    extra: dict[str, Any] = {}

    if variant in ("a", "a_benign"):
        plain_sft(model, tokenizer, examples, config, total, ends, tokens)
    elif variant in ("b", "c"):
        guardtune(model, tokenizer, examples, 5.0 if variant == "b" else 1.0, config, total, ends, tokens, extra)
    elif variant == "e":
        cached_reference(model, tokenizer, examples, config, total, ends, tokens, extra, args)
    elif variant == "d":
        ref, _ = load_base_model(DEFAULT_BASE_MODEL, cache_dir=Path(args.cache_dir))
        ref.to(args.device).requires_grad_(False)
        make_resident(ref)
        extra["rss_after_second_model_mb"] = current_rss_mb()
        paper_style(model, ref, tokenizer, examples, config, total, ends, tokens, extra, args)
    else:
        raise SystemExit(f"unknown variant {variant!r}")

    timed = ends[args.warmup - 1 :]
    timed_tokens = sum(tokens[args.warmup :])
    seconds = timed[-1][0] - timed[0][0]
    cpu_seconds = timed[-1][1] - timed[0][1]
    per_step = [b[0] - a[0] for a, b in zip(timed, timed[1:])]
    cpu_per_step = [b[1] - a[1] for a, b in zip(timed, timed[1:])]
    return {
        "variant": variant,
        "description": DESCRIPTIONS[variant],
        "dataset": DATASET_OF[variant],
        "steps_timed": len(per_step),
        "seconds": seconds,
        "s_per_step": seconds / len(per_step),
        "cpu_s_per_step": cpu_seconds / len(per_step),
        "steps_per_s": len(per_step) / seconds,
        "tokens_timed": timed_tokens,
        "tokens_per_s": timed_tokens / seconds,
        "tokens_per_cpu_s": timed_tokens / cpu_seconds,
        "step_seconds": per_step,
        "step_cpu_seconds": cpu_per_step,
        "model_load_s": load_s,
        "rss_start_mb": rss_start,
        "rss_after_model_load_mb": rss_loaded,
        "peak_rss_mb": extra.pop("peak_rss_training_mb", None) or peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None,
        **extra,
    }


def make_resident(model) -> None:
    """Read every weight once: safetensors weights are memory-mapped and only become
    resident when first used, which would make "RSS after load" meaningless."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()
