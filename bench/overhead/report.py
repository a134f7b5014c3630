"""The comparison of the variants: medians over repeats, the ratios between variants,
whole-job CPU costs composed from measured parts, the printed tables and
``bench/results/<--result-name>.json`` (``bench/render_overhead.py`` renders README's table
from it).

Contracts: the result file holds ``settings``, ``model``, ``versions``, ``variants`` (per
variant: :func:`summarize`), ``ratios`` (``"num/den"`` pairs) and ``jobs``
(:func:`job_costs`, or ``None``), besides :func:`bench.common.write_result`'s run facts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from typing import Any

from bench.common import print_table, ratio, write_result

RESULT_NAME = "train_overhead"
"""``--result-name``'s default: ``bench/results/train_overhead.json``."""
PAIRS = (("b", "a"), ("c", "a_benign"), ("c", "a"), ("e", "a"), ("e", "b"), ("d", "a"), ("d", "b"), ("d", "e"))


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
    measured parts: CPU s/step × steps plus the job's scan. Every guardtune job scans its data
    before training, an SFT-mode (``none``) job too, so ``a`` and ``b`` pay the probe-only
    scan (prompt forwards up to the probe's deepest layer, measured in ``d``) and ``e`` pays
    its scan with the cache (one full reference forward over every whole example, giving the
    probe's features and the cache, measured in ``e``). Paper-style scores inside its steps.
    ``plain_sft_no_scan`` is ``a`` without the scan (an SFT script outside guardtune), for
    reference. Model loading is left out (the same for all). ``None`` unless a, b, d and e
    all ran."""
    if not {"a", "b", "d", "e"} <= results.keys():
        return None
    steps = math.ceil(args.n_examples / args.batch_size)
    scan = results["d"]["scan_once_cpu_s"]
    scan_with_cache = results["e"]["scan_with_cache_cpu_s"]
    extra = {"a": scan, "b": scan, "e": scan_with_cache, "d": 0.0}
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
    no_scan = {str(n): results["a"]["cpu_s_per_step"] * steps * n for n in (1, 3)}
    return {
        "steps_per_epoch": steps,
        "scan_cpu_s": scan,
        "scan_with_cache_cpu_s": scan_with_cache,
        "cpu_s": cpu,
        "plain_sft_no_scan_cpu_s": no_scan,
        "cached_3_epoch_job_vs_plain_sft_no_scan": cpu["3"]["e"] / no_scan["3"],
        "targets": targets,
    }


def compare(results: dict[str, Any]) -> dict[str, Any]:
    """Time, CPU time and peak memory of each pair of :data:`PAIRS` that ran, as ratios."""
    ratios = {}
    for num, den in PAIRS:
        if num in results and den in results:
            ratios[f"{num}/{den}"] = {
                "time_per_step": ratio(results[num]["s_per_step"], results[den]["s_per_step"]),
                "cpu_time_per_step": ratio(results[num]["cpu_s_per_step"], results[den]["cpu_s_per_step"]),
                "peak_rss": ratio(results[num]["peak_rss_mb"], results[den]["peak_rss_mb"]),
                "peak_rss_delta_mb": results[num]["peak_rss_mb"] - results[den]["peak_rss_mb"],
            }
    return ratios


def print_report(results: dict[str, Any], ratios: dict[str, Any], jobs: dict[str, Any] | None, n_examples: int) -> None:
    """The variants' table, the ratios, paper-style's scoring cost and the job costs."""
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
    print()
    print_table(
        ["ratio", "time/step (wall)", "time/step (CPU)", "peak RSS", "peak RSS Δ MiB"],
        [[pair, *r.values()] for pair, r in ratios.items()],
    )
    if "d" in results:
        d = results["d"]
        print(
            f"\nd: probe scoring inside the loop {d['risk_scoring_s_per_step']:.3f} s/step "
            f"(CPU {d['risk_scoring_cpu_s_per_step']:.3f}); guardtune's one scan of all {n_examples} examples "
            f"before training: {d['scan_once_s']:.2f} s (CPU {d['scan_once_cpu_s']:.2f})"
        )
    print(
        "\nNote: CPU cores shared with other workloads; wall-clock numbers are noisy. CPU time per step "
        "(process time, one torch thread) is the steadier measure; ratios come from the same run."
    )

    if jobs:
        print()
        print_table(
            ["per job (CPU s)", *jobs["cpu_s"]["1"]],
            [[f"{e} epoch(s)", *jobs["cpu_s"][e].values()] for e in ("1", "3")],
        )
        print(json.dumps(jobs["targets"], indent=1))


def write(args: argparse.Namespace, results: dict[str, Any], ratios: dict[str, Any], jobs: dict[str, Any] | None):
    """The result file, with the run's settings and the torch/transformers versions; its path."""
    import torch
    import transformers

    return write_result(
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
