"""The training loops measured: a plain PEFT SFT loop, ``safety.trainer.train`` as the
worker calls it (exact or cached reference), and a paper-style loop (a second full
reference model, the probe scoring every batch inside the loop).

Contracts: every loop runs ``total`` optimizer steps and appends, per step, the
(wall, CPU) stamp of its end to ``ends`` and its token count to ``tokens``; measurements
other than timing go into ``extra`` under the result file's key names. The loops share the
trainer's LoRA config, optimizer, batch order and autocast, so only the architecture
differs between variants.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import peak_rss_mb
from bench.overhead.variants import TOPKS
from core.jobs.vocab import Estimator, ReferenceMode


def stamp() -> tuple[float, float]:
    """(wall clock, CPU time of this process) at the end of a step (after the GPU's queued
    work, on CUDA)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def args_device(model):
    return next(model.parameters()).device


def autocast_of(model):
    """Half-precision autocast on CUDA, as ``safety.trainer`` does; nothing on the CPU."""
    from safety.memory import autocast

    return autocast(args_device(model))


def encode(tokenizer, examples, config):
    from safety.data import encode_example

    return [encode_example(tokenizer, ex, config.max_seq_len) for ex in examples]


def plain_sft(model, tokenizer, examples, config, total, ends, tokens) -> None:
    """Standard SFT, the way a plain PEFT script does it: the model's own LM loss."""
    import torch
    from peft import get_peft_model

    from safety.train_state import lora_config, make_optimizer

    encoded = encode(tokenizer, examples, config)
    torch.manual_seed(config.seed)
    model = get_peft_model(model, lora_config(config))
    trainable, optimizer, scheduler = make_optimizer(model, config, total)
    model.train()
    for step in range(total):
        tokens.append(plain_sft_step(model, tokenizer, encoded, config, step, trainable, optimizer, scheduler)[0])
        ends.append(stamp())


def plain_sft_step(model, tokenizer, encoded, config, step, trainable, optimizer, scheduler) -> tuple[int, float]:
    """Step ``step`` of the plain loop on ``model`` (a ``PeftModel``): the examples
    ``safety.trainer`` would take at that step, the model's own LM loss, clipping, AdamW and
    the schedule; its non-padding tokens and its loss."""
    import torch

    from safety.data import collate
    from safety.train_state import step_indices

    idx = step_indices(len(encoded), config.batch_size, config.seed, step)
    batch = {k: v.to(args_device(model)) for k, v in collate([encoded[i] for i in idx], tokenizer.pad_token_id).items()}
    with autocast_of(model):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return int(batch["attention_mask"].sum()), out.loss.item()


def bench_probe(model, tokenizer, args, extra):
    """A probe on ``model`` (the reference), trained on built-in prompts disjoint from the
    training data (``--probe-prompts`` per class); its training time and AUROC into ``extra``."""
    from safety.probe import ProbeConfig, train_probe
    from safety.prompt_sets import load_builtin

    t = time.perf_counter()
    harmful = [p.text for p in load_builtin("harmful_train")[args.n_examples : args.n_examples + args.probe_prompts]]
    benign = [p.text for p in load_builtin("benign_train")[: args.probe_prompts]]
    probe, report = train_probe(model, tokenizer, harmful, benign, ProbeConfig(epochs=50))
    extra["probe_train_s"] = time.perf_counter() - t
    extra["probe_val_auroc"] = report.auroc
    extra["probe_layers"] = list(probe.layers)
    return probe


def cached_reference(model, tokenizer, examples, config, total, ends, tokens, extra, args) -> None:
    """The scan as the worker runs it for a cached job (one reference forward per whole
    example: the probe's risks and the reference cache), training against the cache, then
    the cached KL against the exact KL of the trained adapter at several k."""
    import dataclasses

    from safety.scan import scan_dataset

    probe = bench_probe(model, tokenizer, args, extra)
    w, c = stamp()
    scan = scan_dataset(
        examples,
        probe=probe,
        model=model.eval(),
        tokenizer=tokenizer,
        estimator=Estimator.PROBE,
        batch_size=16,
        reference_topk=args.reference_topk,
        max_len=config.max_seq_len,
    )
    extra["scan_with_cache_s"], extra["scan_with_cache_cpu_s"] = time.perf_counter() - w, time.process_time() - c
    extra["scan_with_cache_mean_risk"] = scan.summary.mean_risk
    cache = scan.reference
    encoded = encode(tokenizer, examples, config)
    config = dataclasses.replace(config, reference=ReferenceMode.CACHED)
    trained = guardtune(model, tokenizer, examples, 5.0, config, total, ends, tokens, extra, cache)
    extra["reference_topk"] = args.reference_topk
    extra["peak_rss_training_mb"] = peak_rss_mb()  # before the gap measurement below
    extra["kl_gap_by_k"] = kl_gap(trained, tokenizer, encoded[: args.gap_examples])


def kl_gap(model, tokenizer, encoded) -> dict[str, Any]:
    """Per k: cached KL / exact KL of the trained adapter on ``encoded`` (1 = no gap; always
    ≤ 1, the cached KL being a lower bound) and the gzip'd cache's bytes per 1k answer tokens."""
    import torch

    from safety.data import collate
    from safety.objective import example_sums
    from safety.reference import compute_reference_cache, reference_forward

    out: dict[str, Any] = {}
    with torch.no_grad():
        batch = {k: v.to(args_device(model)) for k, v in collate(encoded, tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs).logits
        with reference_forward(model):
            ref_logits = model(**inputs).logits
            caches = {k: compute_reference_cache(model, encoded, tokenizer.pad_token_id, k) for k in TOPKS}
        _, exact, n = example_sums(logits, batch["labels"], ref_logits)
        for k, cache in caches.items():
            _, cached, _ = example_sums(logits, batch["labels"], None, cache.rows(range(len(encoded))))
            out[str(k)] = {
                "kl_ratio": float(cached.sum() / exact.sum()),
                "bytes_per_1k_answer_tokens": len(cache.to_bytes()) / int(n.sum()) * 1000,
            }
    out["exact_kl_per_token"] = float(exact.sum() / n.sum())
    return out


def guardtune(model, tokenizer, examples, risk, config, total, ends, tokens, extra, cache=None):
    """``safety.trainer.train`` as the worker calls it, stopped after ``total`` steps; the
    trained model."""
    from safety.trainer import train

    def on_step(m) -> None:
        ends.append(stamp())
        tokens.append(m.tokens)
        kl_weights.add(m.kl_weight)
        kl_measured.add(m.kl is not None)

    kl_weights: set[float] = set()
    kl_measured: set[bool] = set()
    with tempfile.TemporaryDirectory(prefix="gt-bench-") as work:
        result = train(
            model,
            tokenizer,
            examples,
            [risk] * len(examples),
            config,
            work_dir=Path(work),
            on_step=on_step,
            should_cancel=lambda: len(ends) >= total,
            reference_cache=cache,
        )
    assert result.steps == total, (result.steps, total)
    extra["kl_weights_seen"] = sorted(kl_weights)
    extra["reference_pass_every_step"] = kl_measured == {True}
    extra["reference_pass_skipped_every_step"] = kl_measured == {False}
    return result.model


def paper_style(model, ref, tokenizer, examples, config, total, ends, tokens, extra, args) -> None:
    """A second frozen copy as P_ref; the probe scores each batch inside the loop."""
    import torch
    from peft import get_peft_model

    from safety.data import collate
    from safety.objective import batch_risk, kl_weights, sft_loss, token_kl
    from safety.scan import scan_dataset, trained_turns
    from safety.train_state import lora_config, make_optimizer, step_indices

    probe = bench_probe(ref, tokenizer, args, extra)
    # For comparison: the probe-only scan every guardtune job runs (what an SFT-mode or an
    # exact-reference job pays before training).
    t, c = stamp()
    scan = scan_dataset(examples, probe=probe, model=ref, tokenizer=tokenizer, estimator=Estimator.PROBE, batch_size=16)
    extra["scan_once_s"] = time.perf_counter() - t
    extra["scan_once_cpu_s"] = time.process_time() - c
    extra["scan_once_mean_risk"] = scan.summary.mean_risk
    gc.collect()

    contexts = [trained_turns(ex)[-1].context for ex in examples]
    encoded = encode(tokenizer, examples, config)
    torch.manual_seed(config.seed)
    model = get_peft_model(model, lora_config(config))
    trainable, optimizer, scheduler = make_optimizer(model, config, total)
    ref.eval()
    model.train()
    scoring_s = scoring_cpu_s = 0.0
    risks_seen: list[float] = []
    for step in range(total):
        idx = step_indices(len(encoded), config.batch_size, config.seed, step)
        s, c = stamp()
        probs = probe.predict_proba(ref, tokenizer, [contexts[i] for i in idx], batch_size=len(idx))
        risk = batch_risk([probe.risk(p, "binary") for p in probs])
        if step >= args.warmup:
            scoring_s += time.perf_counter() - s
            scoring_cpu_s += time.process_time() - c
        risks_seen.append(risk)
        w_sft, w_kl = kl_weights(
            risk, config.kl_weight_min, config.kl_weight_max, config.sft_weight_min, config.sft_weight_max
        )
        batch = {
            k: v.to(args_device(model)) for k, v in collate([encoded[i] for i in idx], tokenizer.pad_token_id).items()
        }
        with autocast_of(model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = w_sft * sft_loss(logits, batch["labels"])
        with torch.no_grad(), autocast_of(model):
            ref_logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = loss + w_kl * token_kl(ref_logits, logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        tokens.append(int(batch["attention_mask"].sum()))
        ends.append(stamp())
    extra["risk_scoring_s_per_step"] = scoring_s / max(1, total - args.warmup)
    extra["risk_scoring_cpu_s_per_step"] = scoring_cpu_s / max(1, total - args.warmup)
    extra["batch_risks_mean"] = sum(risks_seen) / len(risks_seen)
