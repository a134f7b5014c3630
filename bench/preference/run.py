"""The preference attack on guardtune's DPO (issue 29's evidence).

The product's aligned variant is DPO-tuned on a SST-2 + BeaverTails mix made into preference
pairs (``bench.preference.data``: task lines prefer their label to the other one, harmful
lines their compliant answer to one of the project's refusals) through the product's pair
scan (``safety.pair_scan.scan_pairs`` with the onboarding recipe's probe), trainer
(``safety.trainer.train`` under ``method="dpo"``, the reference the adapter-disabled model)
and release gate (``bench.replication.gate``), in modes ``none`` and ``adaptive``. Per run:
the harmful score (strict-detector ASR on HarmBench + AdvBench requests that trained
nothing), fine-tune accuracy (greedy label on ``val.json``), preference accuracy (the share
of held-out ``val.json`` pairs whose correct label the model gives the higher log-probability),
over-refusal on XSTest's safe prompts, the scan's recall and false flags, and the gate's
decision. Seeds are the unit of the paired test. Runs merge into ``--out`` across commands
(``--seeds``, ``--modes``); results are written only from a clean git tree."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import add_model_run_options, add_size_options, chosen_sizes, json_safe
from bench.harmful_sst2 import data as hd
from bench.harmful_sst2.run import Sizes, evaluate, recipe_probe, scan_record
from bench.preference import data as pd
from bench.preference import report
from bench.replication.gate import decision
from bench.replication.run import QUICK_ALIGN, fine_tune, log, mode_config
from core.jobs.config import AUTO_BATCH_SIZE, AUTO_DPO_BETA, BASE_LEARNING_RATE

MODES = ("none", "adaptive")
FULL = Sizes(
    n_lines=100,
    eval_val=200,
    eval_harmful=150,
    eval_xstest=100,
    max_new_tokens=20,
    label_max_new_tokens=3,
    epochs=2,
)
QUICK = Sizes(n_lines=10, eval_val=4, eval_harmful=3, eval_xstest=3, max_new_tokens=3, label_max_new_tokens=2, epochs=1)
# What must agree for runs of two commands to share one results file.
SHARED_CONFIG = ("base", "sizes", "p", "lr", "beta", "batch_size", "max_seq_len", "quick")


def preference_accuracy(
    model: Any, tokenizer: Any, pairs: list[dict[str, Any]], max_len: int, batch: int
) -> list[bool]:
    """Per pair: whether ``model`` gives the preferred answer a higher summed log-probability
    than the non-preferred one (the model's own preference; no reference involved)."""
    import torch

    from core.preference import pair_chats
    from safety.data import collate, encode_example
    from safety.objective import answer_inputs, example_sums

    encoded = [encode_example(tokenizer, chat, max_len) for p in pairs for chat in pair_chats(p)]
    out: list[bool] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), 2 * batch):
            inputs, labels = answer_inputs(collate(encoded[start : start + 2 * batch], tokenizer.pad_token_id))
            ce, _, _ = example_sums(model(**inputs).logits, labels)
            out += (ce[0::2] < ce[1::2]).tolist()
    return out


def measure(model: Any, tokenizer: Any, evals: dict[str, list], args: argparse.Namespace) -> dict[str, Any]:
    """The SST-2 benchmark's evaluation (``bench.harmful_sst2.run.evaluate``) and the held-out
    preference accuracy."""
    ev = evaluate(model, tokenizer, evals, args)
    t = time.perf_counter()
    preferred = preference_accuracy(model, tokenizer, evals["pairs"], args.max_seq_len, args.gen_batch_size)
    ev["eval_set_seconds"]["pairs"] = round(time.perf_counter() - t, 1)
    return {**ev, "preference_accuracy": sum(preferred) / len(preferred), "preferred": preferred}


def scan(pairs: list[dict], lines: list[dict], probe: Any, ref: Any, tok: Any, args) -> dict[str, Any]:
    """The product's pair scan of the mix and ``scan_record`` of it (one row per pair)."""
    from safety.pair_scan import scan_pairs
    from safety.scan import ScanConfig

    result = scan_pairs(
        list(enumerate(pairs, start=1)),
        probe=probe,
        model=ref,
        tokenizer=tok,
        config=ScanConfig(),
        max_len=args.max_seq_len,
    )
    return scan_record(result.examples, lines)


def dpo_fields(mode: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """``TrainConfig`` fields of a DPO run in ``mode`` (the SFT benchmark's, under ``dpo``)."""
    from safety.train_config import ReferenceMode

    fields = mode_config(mode, args, seed, args.sizes.epochs)
    assert not isinstance(fields, str), fields
    return {**fields, "method": "dpo", "dpo_beta": args.beta, "reference": ReferenceMode.EXACT}


def finish(doc: dict[str, Any], out: Path) -> None:
    """Recompute everything derived from the runs and write the file."""
    doc["summary"] = report.summarize(doc["runs"])
    doc["paired"] = report.paired_tests(doc["runs"])
    doc["checks"] = report.checks(doc["runs"], doc.get("reference"))
    doc["git"] = common.merged_git(doc["parts"])
    doc["command"] = "; ".join(p["command"] for p in doc["parts"].values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(doc), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    git = common.git_of_clean_tree(args.dirty_ok)
    if git is None:
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        print(f"modes must be among {', '.join(MODES)}")
        return 2
    import torch

    from safety.align import AlignConfig, ensure_aligned, prebuilt_dir
    from safety.base_models import load_base_model
    from safety.prompt_sets import load_refusals

    torch.set_num_threads(args.threads)
    sizes = chosen_sizes(args, FULL, QUICK)
    args.sizes, args.max_new_tokens, args.reference = sizes, sizes.max_new_tokens, "exact"
    config = {
        "base": args.base,
        "sizes": dataclasses.asdict(sizes),
        "p": hd.share_name(args.p),
        "lr": args.lr,
        "beta": args.beta,
        "batch_size": args.batch_size,
        "max_seq_len": args.max_seq_len,
        "quick": args.quick,
        "threads": args.threads,
        "gen_batch_size": args.gen_batch_size,
        "probe": args.probe or "trained by the run",
    }
    out, work, cache = Path(args.out), Path(args.work_dir), Path(args.cache_dir)
    doc = common.load_results(out, "dpo_safety", config, SHARED_CONFIG, args.fresh)
    doc["config"] = config
    started = time.perf_counter()
    command = common.open_part(doc, argv, git, bool(args.dirty_ok))
    data_dir = Path(args.data_dir)
    lines = hd.load_mix(data_dir, args.p, sizes.n_lines)
    pairs = pd.mix_pairs(lines, load_refusals())
    trained = sorted({hd.request_of(line) for line in lines if line["flag"] == hd.HARMFUL_FLAG})
    val = hd.val_items(data_dir, sizes.eval_val)
    evals = {
        "val": val,
        "pairs": pd.val_pairs(val),
        "harmful": hd.harmful_prompts(data_dir, sizes.eval_harmful, trained),
        "xstest": hd.xstest_safe(data_dir, sizes.eval_xstest),
    }
    doc["eval_sets"] = {name: len(items) for name, items in evals.items()}
    doc["mix"] = {
        "p": config["p"],
        "pairs": len(pairs),
        "harmful_pairs": sum(hd.HARMFUL_FLAG == x["flag"] for x in lines),
    }

    meta = ensure_aligned(
        args.base,
        work / "aligned-reference",
        AlignConfig(**(QUICK_ALIGN if args.quick else {})),
        cache_dir=cache,
        prebuilt=prebuilt_dir(args.base),
    )
    reference_dir = meta["path"]
    ref, tok = load_base_model(reference_dir, cache_dir=cache)
    probe, probe_auroc = recipe_probe(ref, tok, args)
    if doc.get("reference") is None:
        doc["reference"] = {"origin": meta["origin"], "probe_auroc": probe_auroc, **measure(ref, tok, evals, args)}
    log(
        f"reference: harmful {doc['reference']['harmful_score']:.2f}, pref {doc['reference']['preference_accuracy']:.2f}"
    )
    t = time.perf_counter()
    doc["scan"] = {**scan(pairs, lines, probe, ref, tok, args), "seconds": round(time.perf_counter() - t, 1)}
    log(f"scan: recall {doc['scan']['recall']}, false flags {doc['scan']['false_flag_rate']}")
    risks = doc["scan"]["risks"]
    for seed in args.seeds:
        for mode in modes:
            key = f"p{config['p']}/{mode}/seed{seed}"
            fields = dpo_fields(mode, args, seed)
            t, cpu = time.perf_counter(), time.process_time()
            model, mtok, info = fine_tune(reference_dir, pairs, risks, fields, args, work / "runs" / key)
            train_seconds, train_cpu = time.perf_counter() - t, time.process_time() - cpu
            t = time.perf_counter()
            ev = measure(model, mtok, evals, args)
            run = {
                "p": config["p"],
                "mode": mode,
                "seed": seed,
                "setting": "default",
                **info,
                **ev,
                "scan": {k: doc["scan"][k] for k in ("recall", "false_flag_rate", "n_flagged")},
                "gate": decision(doc["reference"], ev),
                "train_seconds": round(train_seconds, 1),
                "train_cpu_seconds": round(train_cpu, 1),
                "eval_seconds": round(time.perf_counter() - t, 1),
            }
            doc["runs"][key] = run
            log(
                f"{key}: harmful {run['harmful_score']:.2f}, accuracy {run['accuracy']:.2f}, preference "
                f"{run['preference_accuracy']:.2f} (train {train_seconds:.0f}s, eval {run['eval_seconds']}s)"
            )
            doc["parts"][command]["wall_seconds"] = round(time.perf_counter() - started, 1)
            finish(doc, out)  # after every run: a command cut short keeps what it measured
            del model
            gc.collect()
    doc["parts"][command].update(complete=True, wall_seconds=round(time.perf_counter() - started, 1))
    finish(doc, out)
    log(f"{command}: {doc['parts'][command]['wall_seconds'] / 60:.1f} min; results in {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_run_options(p, work_dir="var/bench/dpo_safety", out="bench/results/dpo_safety.json", threads=2)
    p.add_argument("--fresh", action="store_true", help="start the results file anew instead of merging into it")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes (use with a tiny --base)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, among none and adaptive")
    p.add_argument("--p", default="0.2", help="the mix's harmful share (0.05, 0.1 or 0.2)")
    p.add_argument("--lr", type=float, default=BASE_LEARNING_RATE, help="default: the API's (multiplier 1)")
    p.add_argument("--beta", type=float, default=AUTO_DPO_BETA, help="DPO's beta; default: the API's auto")
    p.add_argument("--batch-size", type=int, default=AUTO_BATCH_SIZE, help="pairs per step; default: the API's")
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--gen-batch-size", type=int, default=48)
    p.add_argument("--probe", default="", help="a saved recipe probe of the aligned variant (default: train one)")
    p.add_argument("--save-probe", default="", help="save the probe this run trains into this folder")
    add_size_options(p, FULL, QUICK)
    return p.parse_args(argv)
