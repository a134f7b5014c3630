"""Training overhead of guardtune's adaptive KL objective, against plain SFT and a paper-style
implementation, on the default base model (SmolLM2-135M-Instruct, float32, CPU).

Variants (each in a fresh Python subprocess, so peak RSS is per variant):

* ``a``        standard SFT: a plain PEFT loop written here (HF's built-in LM loss), harmful-ish data.
* ``a_benign`` the same plain loop on the benign data set: the baseline of ``c`` (same tokens).
* ``b``        ``safety.trainer.train``, mode ``adaptive``, the paper's bounds (``kl_lo=0.1``),
               harmful-ish data with risk 5 on every example: ``w_kl = 0.9``, one reference
               pass (adapter disabled, same weights) every step.
* ``c``        ``safety.trainer.train``, mode ``adaptive``, ``kl_lo=0``, benign data with risk 1:
               ``w_kl = 0``, the reference pass is skipped.
* ``e``        ``safety.trainer.train``, mode ``adaptive``, ``reference="cached"``, harmful-ish data with
               risk 5 (``w_kl = 0.9``): the reference's top-k log-probs computed once before
               training (timed: ``cache_build_cpu_s``, what the scan stage adds) and no reference
               pass in the loop. After training it also measures the cached KL's gap to the exact
               KL and the cache's size per 1k answer tokens at several k.
* ``d``        paper-style, written here: a second full copy of the model as the frozen
               reference, the risk of every batch scored inside the training loop (the
               project's activation probe run on the batch's prompts through the reference
               copy), then ``w_sft · SFT + w_kl · KL`` with the KL against the second copy.
               The loss maths is ``safety.objective``'s, so only the architecture differs.

Same LoRA config (``TrainConfig`` defaults: r 8, alpha 16, q/k/v/o), same optimizer (AdamW,
lr 2e-4, grad-norm clip 1.0, linear schedule with warm-up), same seeded per-epoch batch order,
same ``--steps`` after ``--warmup`` steps that are not timed. Time per step is the wall time
between the ends of consecutive steps (data collation, forward, backward, optimizer), i.e.
what a job's progress sees; CPU time per step is this process's CPU time over the same
steps, the steadier number on a shared host.

Data: harmful-ish = the built-in ``harmful_train`` prompts paired with the built-in refusals;
benign = ``examples/demo_train.jsonl`` (chat examples with answers). The data is only a token
workload here; the risk each variant uses is assigned (b: 5, c: 1) or scored (d).

Threads: one torch thread by default (``--threads 1``). On a host whose cores are shared
with other busy processes, torch's OpenMP team of two threads spends much of each step
waiting at barriers for a descheduled partner (measured here: a forward+backward took 11-34 s
with two threads vs 5.2-5.7 s with one, and 1.6 s with two on a quiet minute); one thread
gives steady, comparable CPU time per step. ``--threads 0`` uses torch's default (one per
core) on a quiet machine.

    python bench/train_overhead.py                     # defaults: about 6-7 minutes on 2 cores
    python bench/train_overhead.py --steps 16 --repeats 2 --threads 0
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, current_rss_mb, peak_rss_mb, print_table, ratio, write_result  # noqa: E402

VARIANTS = ("a", "a_benign", "b", "c", "e", "d")
TOPKS = (8, 16, 32, 64)
DESCRIPTIONS = {
    "a": "plain PEFT SFT loop (baseline), harmful-ish data",
    "a_benign": "plain PEFT SFT loop, benign data (baseline of c)",
    "b": "guardtune adaptive, kl bounds [0.1, 0.9], risk 5: KL every step",
    "c": "guardtune adaptive, kl bounds [0, 0.9], risk 1: reference pass skipped",
    "e": "guardtune adaptive, reference cached (top-k from one pass before training), risk 5",
    "d": "paper-style: 2nd full reference model + probe risk per batch + KL every step",
}
DATASET_OF = {"a": "harmful", "a_benign": "benign", "b": "harmful", "c": "benign", "d": "harmful", "e": "harmful"}
RESULT_NAME = "train_overhead"


# -- data ----------------------------------------------------------------------------------------
def build_dataset(kind: str, n: int) -> list[dict[str, Any]]:
    """``n`` OpenAI chat examples: harmful prompts + refusals, or the demo's benign examples."""
    if kind == "harmful":
        from safety.prompt_sets import load_builtin, load_refusals

        prompts = load_builtin("harmful_train")[:n]
        refusals = load_refusals()
        return [
            {
                "messages": [
                    {"role": "user", "content": p.text},
                    {"role": "assistant", "content": refusals[i % len(refusals)]},
                ]
            }
            for i, p in enumerate(prompts)
        ]
    rows = [
        json.loads(line) for line in (REPO / "examples" / "demo_train.jsonl").read_text().splitlines() if line.strip()
    ]
    return [rows[i % len(rows)] for i in range(n)]


# -- the child: one variant ------------------------------------------------------------------------
def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from safety.base_models import DEFAULT_BASE_MODEL, load_base_model
    from safety.trainer import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    rss_start = current_rss_mb()
    t0 = time.perf_counter()
    model, tokenizer = load_base_model(DEFAULT_BASE_MODEL, cache_dir=Path(args.cache_dir))
    model.to(args.device)
    _make_resident(model)
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()

    examples = build_dataset(DATASET_OF[variant], args.n_examples)
    total = args.warmup + args.steps
    config = TrainConfig(
        mode="adaptive",
        kl_lo=0.0 if variant == "c" else 0.1,
        kl_hi=0.9,
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
        _plain_sft(model, tokenizer, examples, config, total, ends, tokens)
    elif variant in ("b", "c"):
        _guardtune(model, tokenizer, examples, 5.0 if variant == "b" else 1.0, config, total, ends, tokens, extra)
    elif variant == "e":
        _cached(model, tokenizer, examples, config, total, ends, tokens, extra, args)
    elif variant == "d":
        ref, _ = load_base_model(DEFAULT_BASE_MODEL, cache_dir=Path(args.cache_dir))
        ref.to(args.device).requires_grad_(False)
        _make_resident(ref)
        extra["rss_after_second_model_mb"] = current_rss_mb()
        _paper_style(model, ref, tokenizer, examples, config, total, ends, tokens, extra, args)
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


def _stamp() -> tuple[float, float]:
    """(wall clock, CPU time of this process) at the end of a step (after the GPU's queued
    work, on CUDA)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def _make_resident(model) -> None:
    """Read every weight once: safetensors weights are memory-mapped and only become
    resident when first used, which would make "RSS after load" meaningless."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def args_device(model):
    return next(model.parameters()).device


def _autocast(model):
    """bf16 autocast on CUDA, as ``safety.trainer`` does; nothing on the CPU."""
    from safety.train_step import autocast

    return autocast(args_device(model))


def _encode(tokenizer, examples, config):
    from safety.data import encode_example

    return [encode_example(tokenizer, ex, config.max_seq_len) for ex in examples]


def _plain_sft(model, tokenizer, examples, config, total, ends, tokens) -> None:
    """Standard SFT, the way a plain PEFT script does it: the model's own LM loss."""
    import torch
    from peft import get_peft_model

    from safety.data import collate
    from safety.train_state import lora_config, make_optimizer
    from safety.train_step import step_indices

    encoded = _encode(tokenizer, examples, config)
    torch.manual_seed(config.seed)
    model = get_peft_model(model, lora_config(config))
    trainable, optimizer, scheduler = make_optimizer(model, config, total)
    model.train()
    for step in range(total):
        idx = step_indices(len(encoded), config.batch_size, config.seed, step)
        batch = {
            k: v.to(args_device(model)) for k, v in collate([encoded[i] for i in idx], tokenizer.pad_token_id).items()
        }
        with _autocast(model):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        out.loss.item()
        tokens.append(int(batch["attention_mask"].sum()))
        ends.append(_stamp())


def _cached(model, tokenizer, examples, config, total, ends, tokens, extra, args) -> None:
    """Build the reference cache (as the scan stage does), train against it, then measure
    the cached KL against the exact KL of the trained adapter at several k."""
    import dataclasses

    from safety.reference import compute_reference_cache

    encoded = _encode(tokenizer, examples, config)
    w, c = _stamp()
    cache = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, args.reference_topk)
    extra["cache_build_s"], extra["cache_build_cpu_s"] = time.perf_counter() - w, time.process_time() - c
    config = dataclasses.replace(config, reference="cached")
    trained = _guardtune(model, tokenizer, examples, 5.0, config, total, ends, tokens, extra, cache)
    extra["reference_topk"] = args.reference_topk
    extra["peak_rss_training_mb"] = peak_rss_mb()  # before the gap measurement below
    extra["kl_gap_by_k"] = _kl_gap(trained, tokenizer, encoded[: args.gap_examples])


def _kl_gap(model, tokenizer, encoded) -> dict[str, Any]:
    """Per k: cached KL / exact KL of the trained adapter on ``encoded`` (1 = no gap; always
    ≤ 1, the cached KL being a lower bound) and the gzip'd cache's bytes per 1k answer tokens."""
    import torch

    from safety.data import collate
    from safety.objective import example_sums
    from safety.reference import compute_reference_cache

    out: dict[str, Any] = {}
    with torch.no_grad():
        batch = {k: v.to(args_device(model)) for k, v in collate(encoded, tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs).logits
        with model.disable_adapter():
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


def _guardtune(model, tokenizer, examples, risk, config, total, ends, tokens, extra, cache=None):
    """``safety.trainer.train`` as the worker calls it, stopped after ``total`` steps; the
    trained model."""
    from safety.trainer import train

    def on_step(m) -> None:
        ends.append(_stamp())
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


def _paper_style(model, ref, tokenizer, examples, config, total, ends, tokens, extra, args) -> None:
    """A second frozen copy as P_ref; the probe scores each batch inside the loop."""
    import torch
    from peft import get_peft_model

    from safety.data import collate
    from safety.objective import batch_risk, kl_weights, sft_loss, token_kl
    from safety.probe import ProbeConfig, train_probe
    from safety.prompt_sets import load_builtin
    from safety.scan import scan_dataset, trained_turns
    from safety.train_state import lora_config, make_optimizer
    from safety.train_step import step_indices

    # A probe on the reference copy, trained on prompts disjoint from the training data.
    t = time.perf_counter()
    harmful = [p.text for p in load_builtin("harmful_train")[args.n_examples : args.n_examples + args.probe_prompts]]
    benign = [p.text for p in load_builtin("benign_train")[: args.probe_prompts]]
    probe, report = train_probe(ref, tokenizer, harmful, benign, ProbeConfig(epochs=50))
    extra["probe_train_s"] = time.perf_counter() - t
    extra["probe_val_auroc"] = report.auroc
    extra["probe_layers"] = list(probe.layers)

    # For comparison: guardtune's way, one scan of the whole data set before training.
    t, c = _stamp()
    scan = scan_dataset(examples, probe=probe, model=ref, tokenizer=tokenizer, estimator="probe", batch_size=16)
    extra["scan_once_s"] = time.perf_counter() - t
    extra["scan_once_cpu_s"] = time.process_time() - c
    extra["scan_once_mean_risk"] = scan.summary.mean_risk
    gc.collect()

    contexts = [trained_turns(ex)[-1].context for ex in examples]
    encoded = _encode(tokenizer, examples, config)
    torch.manual_seed(config.seed)
    model = get_peft_model(model, lora_config(config))
    trainable, optimizer, scheduler = make_optimizer(model, config, total)
    ref.eval()
    model.train()
    scoring_s = scoring_cpu_s = 0.0
    risks_seen: list[float] = []
    for step in range(total):
        idx = step_indices(len(encoded), config.batch_size, config.seed, step)
        s, c = _stamp()
        probs = probe.predict_proba(ref, tokenizer, [contexts[i] for i in idx], batch_size=len(idx))
        risk = batch_risk([probe.risk(p, "binary") for p in probs])
        if step >= args.warmup:
            scoring_s += time.perf_counter() - s
            scoring_cpu_s += time.process_time() - c
        risks_seen.append(risk)
        w_sft, w_kl = kl_weights(risk, config.kl_lo, config.kl_hi, config.sft_lo, config.sft_hi)
        batch = {
            k: v.to(args_device(model)) for k, v in collate([encoded[i] for i in idx], tokenizer.pad_token_id).items()
        }
        with _autocast(model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = w_sft * sft_loss(logits, batch["labels"])
        with torch.no_grad(), _autocast(model):
            ref_logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = loss + w_kl * token_kl(ref_logits, logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        tokens.append(int(batch["attention_mask"].sum()))
        ends.append(_stamp())
    extra["risk_scoring_s_per_step"] = scoring_s / max(1, total - args.warmup)
    extra["risk_scoring_cpu_s_per_step"] = scoring_cpu_s / max(1, total - args.warmup)
    extra["batch_risks_mean"] = sum(risks_seen) / len(risks_seen)


# -- the parent: run every variant, compare -----------------------------------------------------------
def run_child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--child-out",
        str(out),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--max-seq-len",
        str(args.max_seq_len),
        "--n-examples",
        str(args.n_examples),
        "--seed",
        str(args.seed),
        "--cache-dir",
        args.cache_dir,
        "--probe-prompts",
        str(args.probe_prompts),
        "--threads",
        str(args.threads),
        "--reference-topk",
        str(args.reference_topk),
        "--gap-examples",
        str(args.gap_examples),
        "--device",
        args.device,
    ]
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        if proc.returncode != 0:
            raise SystemExit(f"variant {variant} failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    result["subprocess_wall_s"] = time.perf_counter() - started
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of the timing numbers; peak RSS of the largest repeat."""
    first = runs[0]
    keys = ("s_per_step", "cpu_s_per_step", "steps_per_s", "tokens_per_s", "tokens_per_cpu_s")
    per_run = ("s_per_step", "cpu_s_per_step", "peak_rss_mb", "step_seconds", "step_cpu_seconds")
    out = {k: v for k, v in first.items() if k not in keys and k not in per_run}
    for k in keys:
        out[k] = statistics.median(r[k] for r in runs)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["runs"] = [{k: r[k] for k in per_run} for r in runs]
    return out


def job_costs(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    """Whole-job CPU seconds for 1 and 3 epochs over ``--n-examples`` examples, composed from
    measured parts: CPU s/step × steps, plus for guardtune the scan of the data set (probe
    features, measured once in ``d``) and, for the cached variant, the reference-cache pass
    (``e``). Plain SFT has no scan; paper-style scores inside its steps. Model loading is
    left out (the same for all). ``None`` unless a, b, d and e all ran."""
    if not {"a", "b", "d", "e"} <= results.keys():
        return None
    steps = math.ceil(args.n_examples / args.batch_size)
    scan = results["d"]["scan_once_cpu_s"]
    extra = {"a": 0.0, "b": scan, "e": scan + results["e"]["cache_build_cpu_s"], "d": 0.0}
    cpu = {
        str(n): {v: results[v]["cpu_s_per_step"] * steps * n + extra[v] for v in ("a", "b", "e", "d")} for n in (1, 3)
    }
    per_step = results["e"]["cpu_s_per_step"] / results["a"]["cpu_s_per_step"]
    job3 = cpu["3"]["e"] / cpu["3"]["a"]
    memory = results["e"]["peak_rss_mb"] / results["a"]["peak_rss_mb"]
    vs_paper = cpu["3"]["d"] / cpu["3"]["e"]
    targets = {
        "cached_per_step_vs_sft": {"value": per_step, "target": "<= 1.05", "met": per_step <= 1.05},
        "cached_3_epoch_job_vs_sft": {"value": job3, "target": "<= 1.15", "met": job3 <= 1.15},
        "cached_peak_memory_vs_sft": {"value": memory, "target": "<= 1.05", "met": memory <= 1.05},
        "paper_style_3_epoch_job_vs_cached": {"value": vs_paper, "target": ">= 1.5", "met": vs_paper >= 1.5},
    }
    return {
        "steps_per_epoch": steps,
        "scan_cpu_s": scan,
        "cache_build_cpu_s": results["e"]["cache_build_cpu_s"],
        "cpu_s": cpu,
        "targets": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--n-examples", type=int, default=48, help="examples per data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds over all variants (interleaved); medians reported"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--probe-prompts", type=int, default=32, help="per class, for the paper-style probe")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default, one per core); see the module docstring",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the models run")
    parser.add_argument("--result-name", default=RESULT_NAME, help="bench/results/<name>.json")
    parser.add_argument("--reference-topk", type=int, default=32, help="k of the cached variant e")
    parser.add_argument("--gap-examples", type=int, default=4, help="examples for e's cached-vs-exact KL gap")
    parser.add_argument("--cache-dir", default=str(REPO / "var" / "models"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be ≥ 1")

    if args.child:
        Path(args.child_out).write_text(json.dumps(run_variant(args.child, args)))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    print(
        f"train_overhead: {args.steps} timed steps (+{args.warmup} warm-up), batch {args.batch_size}, "
        f"max_seq_len {args.max_seq_len}, {args.n_examples} examples, seed {args.seed}; "
        f"variants {', '.join(variants)}, {args.repeats} round(s); each variant in a fresh process",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_ in range(args.repeats):
        for v in variants:
            r = run_child(v, args)
            runs[v].append(r)
            print(
                f"  round {round_ + 1} {v:9s} {r['s_per_step']:.3f} s/step (CPU {r['cpu_s_per_step']:.3f})  "
                f"{r['tokens_per_s']:.0f} tok/s  "
                f"peak RSS {r['peak_rss_mb']:.0f} MiB  (after load {r['rss_after_model_load_mb']:.0f} MiB)",
                flush=True,
            )
    results = {v: summarize(rs) for v, rs in runs.items()}

    print()
    print_table(
        ["variant", "s/step", "CPU s/step", "steps/s", "tokens/s", "RSS after load MiB", "peak RSS MiB", "what"],
        [
            [
                v,
                r["s_per_step"],
                r["cpu_s_per_step"],
                r["steps_per_s"],
                r["tokens_per_s"],
                r["rss_after_model_load_mb"],
                r["peak_rss_mb"],
                r["description"],
            ]
            for v, r in results.items()
        ],
        digits=3,
    )
    pairs = [("b", "a"), ("c", "a_benign"), ("c", "a"), ("e", "a"), ("e", "b"), ("d", "a"), ("d", "b"), ("d", "e")]
    ratios = {}
    rows = []
    for num, den in pairs:
        if num in results and den in results:
            t = ratio(results[num]["s_per_step"], results[den]["s_per_step"])
            c = ratio(results[num]["cpu_s_per_step"], results[den]["cpu_s_per_step"])
            m = ratio(results[num]["peak_rss_mb"], results[den]["peak_rss_mb"])
            dm = results[num]["peak_rss_mb"] - results[den]["peak_rss_mb"]
            ratios[f"{num}/{den}"] = {
                "time_per_step": t,
                "cpu_time_per_step": c,
                "peak_rss": m,
                "peak_rss_delta_mb": dm,
            }
            rows.append([f"{num}/{den}", t, c, m, dm])
    print()
    print_table(["ratio", "time/step (wall)", "time/step (CPU)", "peak RSS", "peak RSS Δ MiB"], rows)
    if "d" in results:
        d = results["d"]
        print(
            f"\nd: probe scoring inside the loop {d['risk_scoring_s_per_step']:.3f} s/step "
            f"(CPU {d['risk_scoring_cpu_s_per_step']:.3f}); guardtune's one scan of all {args.n_examples} examples "
            f"before training: {d['scan_once_s']:.2f} s (CPU {d['scan_once_cpu_s']:.2f})"
        )
    print(
        "\nNote: CPU cores shared with other workloads; wall-clock numbers are noisy. CPU time per step "
        "(process time, one torch thread) is the steadier measure; ratios come from the same run."
    )

    jobs = job_costs(results, args)
    if jobs:
        print()
        print_table(
            ["per job (CPU s)", *jobs["cpu_s"]["1"]],
            [[f"{e} epoch(s)", *jobs["cpu_s"][e].values()] for e in ("1", "3")],
        )
        print(json.dumps(jobs["targets"], indent=1))

    if not args.no_write:
        import torch
        import transformers

        path = write_result(
            args.result_name,
            {
                "settings": {
                    k: getattr(args, k)
                    for k in (
                        "steps",
                        "warmup",
                        "batch_size",
                        "max_seq_len",
                        "n_examples",
                        "seed",
                        "repeats",
                        "probe_prompts",
                        "threads",
                    )
                },
                "model": f"smollm2-135m-instruct (float32, {args.device}{', bf16 autocast' if args.device == 'cuda' else ''})",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "variants": results,
                "ratios": ratios,
                "jobs": jobs,
            },
        )
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
