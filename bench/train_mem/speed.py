"""guardtune's SFT step against a plain PEFT loop, interleaved in one process.

Two copies of the base model (fp32 on the CPU, bf16 on CUDA, as workers load it), each with the trainer's LoRA config, AdamW and schedule:
``a`` is the plain loop (``bench.overhead.loops.plain_sft_step``: the model's own LM loss),
``b`` is ``safety.train_step.run_step`` of a run ``safety.train_state.setup_run`` built in
mode ``none`` (the product's SFT: its loss, micro-batching, answer-window logits and metrics).
Both take the same examples at every step (``step_indices``). Steps alternate a, b, b, a,
a, b, … so that whatever load the host is under falls on both alike and neither always goes
first; each step is timed on its own (wall and process CPU time) and the first ``warmup``
steps of each are not counted. The ratio is of the medians.

Contracts: :func:`compare_loops` returns the result file's ``speed``; its ``ratio`` is of
process CPU time on the CPU (one torch thread: the steadier measure on a shared host) and of
wall time on CUDA.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.train_mem.rows import long_examples


def compare_loops(
    source: str, *, device: str, cache_dir: Path, batch: int, seq_len: int, warmup: int, steps: int, threads: int
) -> dict[str, Any]:
    import torch
    from peft import get_peft_model

    from bench.overhead.loops import encode, plain_sft_step, stamp
    from core.jobs.vocab import SafetyMode
    from safety.base_models import load_base_model
    from safety.memory import device_weight_dtype
    from safety.train_config import TrainConfig
    from safety.train_state import lora_config, make_optimizer, setup_run
    from safety.train_step import run_step

    if threads:
        torch.set_num_threads(threads)
    total = warmup + steps
    examples = long_examples(4 * batch, seq_len)
    config = TrainConfig(
        mode=SafetyMode.NONE, batch_size=batch, max_seq_len=seq_len, n_epochs=total, checkpoint_every=0
    )
    dtype = device_weight_dtype(device)
    plain_base, tokenizer = load_base_model(source, cache_dir=cache_dir, dtype=dtype, device=device)
    guard_base, _ = load_base_model(source, cache_dir=cache_dir, dtype=dtype, device=device)

    work = tempfile.TemporaryDirectory(prefix="gt-trainmem-speed-")
    run = setup_run(
        guard_base,
        tokenizer,
        examples,
        [1.0] * len(examples),
        config,
        work_dir=Path(work.name),
        resume_dir=None,
        flagged=None,
        validation=None,
        reference_cache=None,
    )
    run.model.train()
    encoded = encode(tokenizer, examples, config)
    torch.manual_seed(config.seed)
    plain = get_peft_model(plain_base, lora_config(config))
    trainable, optimizer, scheduler = make_optimizer(plain, config, run.total_steps)  # the same LR schedule
    plain.train()

    def plain_step(step: int) -> tuple[int, float]:
        return plain_sft_step(plain, tokenizer, encoded, config, step, trainable, optimizer, scheduler)

    def guard_step(step: int) -> tuple[int, float]:
        metrics = run_step(run, step)
        return metrics.tokens, metrics.loss

    loops = {"plain": plain_step, "guardtune": guard_step}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    tokens: dict[str, list[int]] = {name: [] for name in loops}
    losses: dict[str, list[float]] = {name: [] for name in loops}
    for step in range(total):
        order = ("plain", "guardtune") if step % 2 == 0 else ("guardtune", "plain")
        for name in order:
            wall, cpu = stamp()
            n, loss = loops[name](step)
            end_wall, end_cpu = stamp()
            times[name].append((end_wall - wall, end_cpu - cpu))
            tokens[name].append(n)
            losses[name].append(loss)
    work.cleanup()
    if tokens["plain"] != tokens["guardtune"]:
        raise RuntimeError(f"the loops trained different tokens: {tokens}")

    def summary(name: str) -> dict[str, Any]:
        timed = times[name][warmup:]
        wall, cpu = [t[0] for t in timed], [t[1] for t in timed]
        return {
            "median_s_per_step": statistics.median(wall),
            "median_cpu_s_per_step": statistics.median(cpu),
            "step_seconds": wall,
            "step_cpu_seconds": cpu,
            "tokens_per_s": sum(tokens[name][warmup:]) / sum(wall),
            "losses": losses[name],
        }

    loops_out = {name: summary(name) for name in loops}
    key = "median_s_per_step" if device == "cuda" else "median_cpu_s_per_step"
    return {
        "model": source,
        "device": device,
        "batch": batch,
        "seq_len": seq_len,
        "warmup": warmup,
        "steps_timed": steps,
        "torch_threads": torch.get_num_threads(),
        "order": "a b, b a, a b, … (alternating which loop goes first)",
        "loops": loops_out,
        "ratio_of": key,
        "ratio": loops_out["guardtune"][key] / loops_out["plain"][key],
        "wall_ratio": loops_out["guardtune"]["median_s_per_step"] / loops_out["plain"]["median_s_per_step"],
        "first_step_loss_gap": abs(losses["guardtune"][0] - losses["plain"][0]),
    }
