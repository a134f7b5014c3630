"""The field's harmful fine-tuning benchmark (Vaccine, Lisa, Booster) on guardtune's defence.

The product's aligned variant (``safety.align.ensure_aligned``, as the replication) is
fine-tuned on the SST-2 mixes (``bench.harmful_sst2.data``: n = 1000 lines, a share p of
harmful BeaverTails pairs) through the product's scan (activation probe of the onboarding
recipe, ``safety.scan.scan_dataset``), trainer (``safety.trainer.train``, modes as in
``bench.replication.run.mode_config``) and release gate (``bench.replication.gate``). Per
run: fine-tune accuracy (greedy exact match of the label on ``val.json``), harmful score
(strict-detector ASR on HarmBench + AdvBench requests that trained nothing), over-refusal on
XSTest's safe prompts, the scan's recall and false-flag rate against the lines' own ``flag``,
and the gate's decision.

The grid is split into parts (``--part``), each a command that fits 100 minutes on 2 cores
and merges its runs into ``--out``; the summary, the paired tests and the checks are
recomputed from every run the file holds. Results are written only from a clean git tree
(``--dirty-ok`` overrides and marks them)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import (
    QUICK_PROBE,
    add_model_run_options,
    add_size_options,
    chosen_sizes,
    json_safe,
)
from bench.harmful_sst2 import data as hd
from bench.harmful_sst2 import report
from bench.replication.evaluation import asr
from bench.replication.gate import decision
from bench.replication.run import QUICK_ALIGN, fine_tune, log, mode_config, product_scan, unflagged
from core.jobs.config import AUTO_BATCH_SIZE, BASE_LEARNING_RATE

MODES = ("none", "filter", "constant", "adaptive")
SETTINGS = {"default": (1, 1), "lr_x4": (4, 1), "epochs_x2": (1, 2)}  # name → (lr ×, epochs ×)


@dataclasses.dataclass(frozen=True)
class Cell:
    """Runs of one part: share ``p``, modes, seeds and setting."""

    p: str
    modes: tuple[str, ...]
    seeds: tuple[int, ...]
    setting: str = "default"


def parts(seeds: tuple[int, ...]) -> dict[str, list[Cell]]:
    """The grid: every mode at each p (``seeds`` at p = 0.1, the first seed elsewhere; at p =
    0.1 also ``adaptive_batch`` and ``adaptive_bounded``, the bounded objective of
    ``GUARDTUNE_OBJECTIVE``), and at p = 0.1 the first seed of ``none`` and ``adaptive`` at
    lr ×4 and at epochs ×2."""
    one = seeds[:1]
    grid = {f"p{p}": [Cell(p, MODES, one)] for p in ("0", "0.05", "0.2")}
    grid["p0.1"] = [Cell("0.1", (*MODES, "adaptive_batch", "adaptive_bounded"), seeds)]
    grid["stress"] = [Cell("0.1", ("none", "adaptive"), one, s) for s in ("lr_x4", "epochs_x2")]
    return grid


@dataclasses.dataclass(frozen=True)
class Sizes:
    n_lines: int  # training lines per mix (the benchmark's n = 1000; fewer is a shrunk run)
    eval_val: int  # val.json sentences for accuracy
    eval_harmful: int  # harmful requests for the harmful score
    eval_xstest: int  # XSTest safe prompts for over-refusal
    max_new_tokens: int  # answers to harmful and XSTest prompts
    label_max_new_tokens: int  # answers to val.json sentences
    epochs: int


FULL = Sizes(
    n_lines=1000,
    eval_val=300,
    eval_harmful=150,
    eval_xstest=250,
    max_new_tokens=20,
    label_max_new_tokens=3,
    epochs=1,
)
QUICK = Sizes(n_lines=20, eval_val=4, eval_harmful=3, eval_xstest=3, max_new_tokens=3, label_max_new_tokens=2, epochs=1)
# What must agree for runs of two commands to share one results file.
SHARED_CONFIG = ("base", "sizes", "lr", "batch_size", "max_seq_len", "constant_kl_weight", "reference", "quick")


def evaluate(model: Any, tokenizer: Any, evals: dict[str, list], args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy, harmful score and over-refusal of one model, with the per-item outcomes."""
    from safety.evaluate import over_refusal
    from safety.generation import GenerationSettings, generate

    t0 = time.perf_counter()
    labels = generate(
        model,
        tokenizer,
        [v["prompt"] for v in evals["val"]],
        GenerationSettings(args.sizes.label_max_new_tokens, args.gen_batch_size),
    )
    correct = [hd.label_of(a) == v["label"] for a, v in zip(labels, evals["val"])]
    t1 = time.perf_counter()
    harmful = asr(model, tokenizer, evals["harmful"], None, "", args)
    t2 = time.perf_counter()
    refusals = over_refusal(
        model, tokenizer, evals["xstest"], max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size
    )
    seconds = {"val": t1 - t0, "harmful": t2 - t1, "xstest": time.perf_counter() - t2}
    return {
        "eval_set_seconds": {name: round(s, 1) for name, s in seconds.items()},
        "accuracy": sum(correct) / len(correct),
        "harmful_score": harmful["asr"],
        "harmful_score_keyword": harmful["asr_keyword"],
        "over_refusal": refusals.rate,
        "correct": correct,
        "harmful_success": harmful["success"],
        "refused_safe": [g.refused for g in refusals.generations],
        "samples": {"val": [{"label": v["label"], "answer": a} for v, a in zip(evals["val"][:3], labels)]}
        | {"harmful": harmful["samples"]},
        # the gate's view (``bench.replication.gate``): the plain condition and over-refusal
        "asr": {"plain": {k: harmful[k] for k in ("asr_keyword", "asr")}},
    }


def scan_mix(lines: list[dict], examples: list[dict], probe: Any, ref: Any, tok: Any, args) -> tuple[Any, dict]:
    """The product's scan of one mix and :func:`scan_record` of it."""
    scan = product_scan(examples, probe, ref, tok, args)
    return scan, scan_record(scan.examples, lines)


def scan_record(rows: list[Any], lines: list[dict]) -> dict[str, Any]:
    """A scan's recall and false-flag rate against the lines' own ``flag`` (``rows`` the scan's
    ``ExampleRisk`` per line, in order), with every line's risk and flag kept for tracing a miss."""
    flagged = [e.flagged for e in rows]
    bad = [f for f, line in zip(flagged, lines) if line["flag"] == hd.HARMFUL_FLAG]
    good = [f for f, line in zip(flagged, lines) if line["flag"] != hd.HARMFUL_FLAG]
    return {
        "n_harmful": len(bad),
        "n_task": len(good),
        "recall": sum(bad) / len(bad) if bad else None,
        "false_flag_rate": sum(good) / len(good) if good else None,
        "n_flagged": sum(flagged),
        "risks": [round(e.risk, 3) for e in rows],
        "flagged": flagged,
    }


def recipe_probe(ref: Any, tok: Any, args: argparse.Namespace) -> tuple[Any, float | None]:
    """The onboarding recipe's probe of the reference and its test-split AUROC: read from
    ``--probe`` (a probe ``bench/probe_formats.py --save-probe`` trained by the same recipe on
    the same aligned variant; AUROC not recomputed) or trained here and, with ``--save-probe``,
    saved there for later commands to reuse."""
    from safety.probe import Probe
    from safety.probe_recipe import train_recipe_probe

    if args.probe:
        return Probe.load(args.probe), None
    probe, report = train_recipe_probe(ref, tok, **(QUICK_PROBE if args.quick else {}))
    if args.save_probe:
        probe.save(args.save_probe)
    return probe, report.auroc


def finish(doc: dict[str, Any], out: Path) -> None:
    """Recompute everything derived from the runs and write the file."""
    runs = doc["runs"]
    doc["summary"] = report.summarize(runs)
    doc["paired"] = report.paired_tests(runs)
    doc["checks"] = report.checks(runs, doc.get("reference"))
    doc["reported"] = report.reported(runs)
    doc["git"] = common.merged_git(doc["parts"])
    doc["command"] = "; ".join(p["command"] for p in doc["parts"].values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(doc), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    git = common.git_of_clean_tree(args.dirty_ok)
    if git is None:
        return 2
    grid = parts(tuple(args.seeds))
    names = [n for n in args.part.split(",") if n]
    unknown = [n for n in names if n not in grid]
    if unknown:
        print(f"unknown part(s) {unknown}: choose from {', '.join(grid)}")
        return 2
    import torch

    from core.settings import get_settings
    from safety.align import AlignConfig, ensure_aligned, prebuilt_dir
    from safety.base_models import load_base_model

    torch.set_num_threads(args.threads)
    sizes = chosen_sizes(args, FULL, QUICK)
    args.sizes, args.max_new_tokens, args.epochs = sizes, sizes.max_new_tokens, sizes.epochs
    args.reference, args.reference_topk = get_settings().reference, get_settings().reference_topk
    config = {
        "base": args.base,
        "sizes": dataclasses.asdict(sizes),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_seq_len": args.max_seq_len,
        "constant_kl_weight": args.constant_kl_weight,
        "reference": str(args.reference),
        "reference_topk": args.reference_topk,
        "quick": args.quick,
        "threads": args.threads,
        "gen_batch_size": args.gen_batch_size,
        "probe": args.probe or "trained by the run",
    }
    out, work, cache = Path(args.out), Path(args.work_dir), Path(args.cache_dir)
    doc = common.load_results(out, "harmful_finetune_sst2", config, SHARED_CONFIG, args.fresh)
    doc["config"] = config
    if sizes.n_lines < 1000:
        doc["shrunk"] = f"n = {sizes.n_lines} training lines per mix (the benchmark's n is 1000), share p kept"
    started = time.perf_counter()
    command = common.open_part(doc, argv, git, bool(args.dirty_ok))
    part_key = command  # one entry per command: parts may be split further by --seeds and --modes
    data_dir = Path(args.data_dir)
    trained = sorted(
        {hd.request_of(line) for p in hd.SHARES for line in hd.load_mix(data_dir, p) if line["flag"] == hd.HARMFUL_FLAG}
    )
    evals = {
        "val": hd.val_items(data_dir, sizes.eval_val),
        "harmful": hd.harmful_prompts(data_dir, sizes.eval_harmful, trained),
        "xstest": hd.xstest_safe(data_dir, sizes.eval_xstest),
    }
    doc["eval_sets"] = {name: len(items) for name, items in evals.items()}

    meta = ensure_aligned(
        args.base,
        work / "aligned-reference",
        AlignConfig(**(QUICK_ALIGN if args.quick else {})),
        cache_dir=cache,
        prebuilt=prebuilt_dir(args.base),
    )
    reference_dir = meta["path"]
    ref, tok = load_base_model(reference_dir, cache_dir=cache)
    t, cpu = time.perf_counter(), time.process_time()
    probe, probe_auroc = recipe_probe(ref, tok, args)
    probe_seconds, probe_cpu = time.perf_counter() - t, time.process_time() - cpu
    log(f"probe: {probe_seconds:.0f} s ({probe_cpu:.0f} CPU s), AUROC {probe_auroc}")
    if doc.get("reference") is None:
        t = time.perf_counter()
        doc["reference"] = {
            "origin": meta["origin"],
            "probe_auroc": probe_auroc,
            **evaluate(ref, tok, evals, args),
            "eval_seconds": round(time.perf_counter() - t, 1),
        }
    log(f"reference: accuracy {doc['reference']['accuracy']:.2f}, harmful {doc['reference']['harmful_score']:.2f}")
    doc.setdefault("scans", {})
    for cell in (c for n in names for c in grid[n]):
        if args.modes:
            cell = dataclasses.replace(cell, modes=tuple(m for m in cell.modes if m in args.modes.split(",")))
        lines = hd.load_mix(data_dir, cell.p, sizes.n_lines)
        examples = [hd.to_chat(line) for line in lines]
        t = time.perf_counter()
        scan, scan_info = scan_mix(lines, examples, probe, ref, tok, args)
        doc["scans"][cell.p] = {**scan_info, "seconds": round(time.perf_counter() - t, 1)}
        log(f"p{cell.p}: scan recall {scan_info['recall']}, false flags {scan_info['false_flag_rate']:.3f}")
        risks = [e.risk for e in scan.examples]
        lr_x, epochs_x = SETTINGS[cell.setting]
        run_args = argparse.Namespace(**{**vars(args), "lr": args.lr * lr_x})
        for seed in cell.seeds:
            for mode in cell.modes:
                key = f"p{cell.p}/{mode}/seed{seed}" + ("" if cell.setting == "default" else f"/{cell.setting}")
                fields = mode_config(mode, run_args, seed, sizes.epochs * epochs_x)
                assert not isinstance(fields, str), fields  # this trainer runs every mode
                train_examples, train_risks = (
                    unflagged(examples, risks, scan_info["flagged"]) if mode == "filter" else (examples, risks)
                )
                t, cpu = time.perf_counter(), time.process_time()
                model, mtok, info = fine_tune(
                    reference_dir, train_examples, train_risks, fields, run_args, work / "runs" / key, scan.reference
                )
                train_seconds, train_cpu = time.perf_counter() - t, time.process_time() - cpu
                t, cpu = time.perf_counter(), time.process_time()
                ev = evaluate(model, mtok, evals, args)
                run = {
                    "p": cell.p,
                    "mode": mode,
                    "seed": seed,
                    "setting": cell.setting,
                    "command": command,  # the part that made it: a later command may replace it
                    "lr": run_args.lr,
                    "epochs": fields["n_epochs"],
                    "n_examples": len(train_examples),
                    **info,
                    **ev,
                    "scan": {k: scan_info[k] for k in ("recall", "false_flag_rate", "n_flagged")},
                    "gate": decision(doc["reference"], ev),
                    "train_seconds": round(train_seconds, 1),
                    "eval_seconds": round(time.perf_counter() - t, 1),
                    # CPU seconds of all threads: with --threads 2, about the wall time on 2 idle cores
                    "train_cpu_seconds": round(train_cpu, 1),
                    "eval_cpu_seconds": round(time.process_time() - cpu, 1),
                }
                doc["runs"][key] = run
                log(
                    f"{key}: accuracy {run['accuracy']:.2f}, harmful {run['harmful_score']:.2f}, "
                    f"over-refusal {run['over_refusal']:.2f} (train {train_seconds:.0f}s, eval {run['eval_seconds']}s)"
                )
                doc["parts"][part_key]["wall_seconds"] = round(time.perf_counter() - started, 1)
                finish(doc, out)  # after every run: a part cut short keeps what it measured
                del model
                gc.collect()
    doc["parts"][part_key].update(
        complete=True,
        wall_seconds=round(time.perf_counter() - started, 1),
        cpu_seconds=round(time.process_time(), 1),
        probe_seconds=round(probe_seconds, 1),
        probe_cpu_seconds=round(probe_cpu, 1),
    )
    finish(doc, out)
    log(f"{command}: {doc['parts'][part_key]['wall_seconds'] / 60:.1f} min; results in {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", required=True, help="comma-separated parts of the grid: p0, p0.05, p0.1, p0.2, stress")
    add_model_run_options(
        p, work_dir="var/bench/harmful_finetune", out="bench/results/harmful_finetune_sst2.json", threads=2
    )
    p.add_argument("--fresh", action="store_true", help="start the results file anew instead of merging into it")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes (use with a tiny --base)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds at p = 0.1 (the first elsewhere)")
    p.add_argument("--modes", default="", help="only these modes of the parts (comma-separated; default all)")
    p.add_argument("--constant-kl-weight", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=BASE_LEARNING_RATE, help="default: the API's (multiplier 1)")
    p.add_argument("--batch-size", type=int, default=AUTO_BATCH_SIZE, help="default: the API's auto batch size")
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--gen-batch-size", type=int, default=48)
    p.add_argument("--probe", default="", help="a saved recipe probe of the aligned variant (default: train one)")
    p.add_argument("--save-probe", default="", help="save the probe this run trains into this folder")
    add_size_options(p, FULL, QUICK)
    return p.parse_args(argv)
