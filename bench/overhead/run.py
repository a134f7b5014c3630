"""Training overhead of guardtune's adaptive KL objective, against plain SFT and a paper-style
implementation, on the default base model (SmolLM2-135M-Instruct, float32, CPU).

Variants (each in a fresh Python subprocess, so peak RSS is per variant):

* ``a``        standard SFT: a plain PEFT loop written here (HF's built-in LM loss), harmful-ish data.
* ``a_benign`` the same plain loop on the benign data set: the baseline of ``c`` (same tokens).
* ``b``        ``safety.trainer.train``, mode ``adaptive``, the paper's bounds (``kl_weight_min=0.1``),
               harmful-ish data with risk 5 on every example: ``w_kl = 0.9``, one reference
               pass (adapter disabled, same weights) every step.
* ``c``        ``safety.trainer.train``, mode ``adaptive``, ``kl_weight_min=0``, benign data with risk 1:
               ``w_kl = 0``, the reference pass is skipped.
* ``e``        ``safety.trainer.train``, mode ``adaptive``, ``reference="cached"``, harmful-ish data with
               risk 5 (``w_kl = 0.9``): the scan as the worker runs it for a cached job, one
               reference forward over every whole example giving the probe's risks and the
               top-k cache (timed: ``scan_with_cache_cpu_s``), and no reference pass in the loop. After training it also measures the cached KL's gap to the exact
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

Modules: :mod:`bench.overhead.variants` (the variants, the data), :mod:`bench.overhead.loops`
(the training loops), :mod:`bench.overhead.measure` (one variant, in its own process),
:mod:`bench.overhead.report` (comparison, tables, result file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO
from bench.overhead.measure import run_variant
from bench.overhead.report import RESULT_NAME, compare, job_costs, print_report, summarize, write
from bench.overhead.variants import VARIANTS

ENTRY = REPO / "bench" / "train_overhead.py"
"""The script each variant's child process runs (with ``--child``)."""


# -- the parent: run every variant, compare -----------------------------------------------------------
def run_child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    argv = [
        sys.executable,
        str(ENTRY),
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
    ratios = compare(results)
    jobs = job_costs(results, args)
    print_report(results, ratios, jobs, args.n_examples)
    if not args.no_write:
        path = write(args, results, ratios, jobs)
        print(f"wrote {path.relative_to(REPO)}")
