"""Render the README's benchmark tables from ``bench/results/*.json``.

Each table lives between two markers in ``README.md``::

    <!-- results:NAME -->
    ...generated; do not edit by hand...
    <!-- /results:NAME -->

and is rewritten from ``bench/results/NAME.json`` by the renderer of that name below, with a
line saying which commit (and whether from a clean tree) and which command produced it.

    python bench/render_readme.py           # rewrite the marked blocks in place
    python bench/render_readme.py --check   # exit 1 (and say which) when README and JSON disagree

``tests/core/test_readme_results.py`` runs the check. No torch, no project imports.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RESULTS = REPO / "bench" / "results"
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_0-9]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def num(value: Any, digits: int = 2) -> str:
    """A table cell: floats rounded, missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def provenance(doc: dict[str, Any], name: str) -> str:
    git = doc.get("git_at_start") or doc.get("git") or {}  # the code that measured, where recorded
    commit = (git.get("commit") or "unknown")[:7]
    tree = "**uncommitted changes in the tree**" if git.get("dirty") else "clean tree"
    return f"_Rendered from `bench/results/{name}.json`: commit `{commit}` ({tree}), `{doc.get('command', '?')}`._"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- renderers: one per results file --------------------------------------------------------
def render_safety_replication(doc: dict[str, Any]) -> str:
    """``bench/replication`` results: one row per attack × mode, ASR mean over seeds with its
    95 % interval and the paired test against the reference, and the checked targets."""
    rows = []
    ref = doc["reference"]["summary"]
    rows.append(
        [
            "aligned reference",
            "–",
            "–",
            f"{num(ref['asr']['mean'])} [{num(ref['asr']['ci95'][0])}, {num(ref['asr']['ci95'][1])}]",
            num(ref.get("asr_triggered", {}).get("mean")),
            "–",
            num(ref["over_refusal"]["mean"]),
            num(ref["val_loss"]["mean"], 3),
            num(ref["gsm8k_em"]["mean"]),
            "–",
        ]
    )
    for row in doc["summary"]:
        asr = row["asr"]
        trig = row.get("asr_triggered")
        condition = (
            ""
            if row["condition"] == "plain"
            else f" ({row['condition']} template; reference {num(row['reference_asr'])})"
        )
        rows.append(
            [
                row["attack"],
                f"`{row['mode']}`",
                num(row.get("mean_w_kl")),
                f"{num(asr['mean'])} [{num(asr['ci95'][0])}, {num(asr['ci95'][1])}]{condition}",
                num(trig["mean"]) if trig else "–",
                num(row["paired_vs_reference"]["p_value"], 3),
                num(row["over_refusal"]["mean"]),
                num(row["val_loss"]["mean"], 3),
                num(row["gsm8k_em"]["mean"]),
                f"{row['gate_released']} of {len(row['seeds'])}",
            ]
        )
    headers = [
        "attack",
        "mode",
        "mean w_kl",
        "ASR [95% CI]",
        "ASR with trigger",
        "paired p vs reference",
        "over-refusal",
        "val loss (reference answers)",
        "GSM8K EM",
        "released by the gate",
    ]
    seeds = doc["config"]["seeds"]
    note = f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); {'smoke run (--quick)' if doc['config'].get('quick') else 'full run'}."
    if "wall_seconds" in doc:
        threads = doc["config"].get("threads")
        note += f" Wall time {doc['wall_seconds'] / 60:.0f} min ({threads} torch threads)."
    if doc["config"].get("reference"):
        note += f" Modes that regularize use the `{doc['config']['reference']}` reference (top-{doc['config']['reference_topk']}) unless named `_exact`."
    verdicts = {True: "met", False: "**missed**", None: "not measured"}
    checks = "".join(
        f"\n- {name}: {verdicts[c['met']]} ({check_value(c['value'])})" for name, c in doc.get("checks", {}).items()
    )
    return table(headers, rows) + "\n\n" + note + (f"\n\nChecks:{checks}" if checks else "")


def check_value(value: Any) -> str:
    """A check's measured value: a difference of two rates in percentage points (signed), pairs
    of means by metric (cached vs exact), else as recorded."""
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value * 100:+.1f} points"
    if isinstance(value, dict):
        return ", ".join(f"{metric} {a:.3g} vs {b:.3g}" for metric, (a, b) in value.items())
    return str(value)


def points(value: float | None) -> str:
    """A rate as a percentage with one decimal (the field's tables), missing as an en dash."""
    return "–" if value is None else f"{value * 100:.1f}"


def check_lines(checks: dict[str, dict[str, Any]]) -> str:
    """A results file's ``checks`` as list items: met, missed or not measured, with the value
    or the runs missing."""
    verdicts = {True: "met", False: "**missed**", None: "not measured"}
    return "".join(
        f"\n- {name}: {verdicts[c['met']]} ("
        + (f"missing: {', '.join(c['missing'])}" if c.get("missing") else check_value(c["value"]))
        + ")"
        for name, c in checks.items()
    )


def command_covers(command: str, run: dict[str, Any]) -> bool:
    """Whether the ``bench/harmful_finetune.py`` command line ``command`` names ``run``: the
    run's part among its ``--part`` (``p<share>`` at the default setting, ``stress`` at the
    others), its seed among its ``--seeds`` and its mode among its ``--modes`` where given."""
    flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    flags.add_argument("--part", default="")
    flags.add_argument("--seeds", type=int, nargs="+")
    flags.add_argument("--modes", default="")
    args, _ = flags.parse_known_args(shlex.split(command)[2:])  # past "python <script>"
    part = f"p{run['p']}" if run["setting"] == "default" else "stress"
    return (
        part in args.part.split(",")
        and (args.seeds is None or run["seed"] in args.seeds)
        and (not args.modes or run["mode"] in args.modes.split(","))
    )


def runs_by_command(doc: dict[str, Any]) -> dict[str, list[str]]:
    """The runs each command of ``doc["parts"]`` still holds (keys in the parts' order, each
    with its runs' keys): the command a run records, or for a run that records none, the last
    command that covers it (:func:`command_covers`; the parts are in the order their commands
    merged into the file, a later command's run replacing an earlier one's). A command whose
    runs were all replaced holds none; runs no command covers are under ``""``."""
    commands = [part["command"] for part in doc["parts"].values()]
    held: dict[str, list[str]] = {command: [] for command in [*commands, ""]}
    for key, run in doc["runs"].items():
        covering = [command for command in commands if command_covers(command, run)]
        held[run.get("command") or (covering[-1] if covering else "")].append(key)
    return held


def render_harmful_finetune_sst2(doc: dict[str, Any]) -> str:
    """The field's benchmark (``bench/harmful_finetune.py``): per setting, p and mode the
    harmful score and fine-tune accuracy (means over seeds), over-refusal, the scan's recall
    and false flags and the gate's releases; the paired tests; the checks; the commands whose
    runs the file still holds, each with those runs (:func:`runs_by_command`)."""
    sizes, ev, config = doc["config"]["sizes"], doc["eval_sets"], doc["config"]
    ref = doc["reference"]
    rows = [
        ["aligned reference", "–", "–"]
        + [points(ref[m]) for m in ("harmful_score", "accuracy", "over_refusal")]
        + ["–", "–"]
    ]
    for row in doc["summary"]:
        recall, false = row["scan_recall"], row["scan_false_flag_rate"]
        rows.append(
            [
                f"p = {row['p']}" + ("" if row["setting"] == "default" else f", {row['setting'].replace('_x', ' ×')}"),
                f"`{row['mode']}`",
                ", ".join(map(str, row["seeds"])),
                points(row["harmful_score"]["mean"]),
                points(row["accuracy"]["mean"]),
                points(row["over_refusal"]["mean"]),
                f"{points(recall)} / {points(false)}",
                f"{row['gate_released']} of {len(row['seeds'])}",
            ]
        )
    headers = [
        "setting",
        "mode",
        "seeds",
        "harmful score (%)",
        "fine-tune accuracy (%)",
        "over-refusal, XSTest (%)",
        "scan recall / false flags (%)",
        "released by the gate",
    ]
    head = (
        f"{sizes['n_lines']} training lines per mix, {sizes['epochs']} epoch(s) at lr {config['lr']:g}, batch "
        f"{config['batch_size']}; accuracy on {ev['val']} `val.json` sentences, harmful score (strict detector) on "
        f"{ev['harmful']} HarmBench + AdvBench requests, over-refusal on {ev['xstest']} XSTest safe prompts."
    )
    if doc.get("shrunk"):
        head += f" **Shrunk:** {doc['shrunk']}."
    paired = "".join(
        f"\n- `{t['a']}` − `{t['b']}` at p = {t['p']}, {t['metric'].replace('_', ' ')}: "
        f"{check_value(t['mean_diff'])} (seeds {', '.join(map(str, t['seeds']))}; sign-flip p = {num(t['p_value'], 3)})"
        for t in doc["paired"]
    )
    checks = check_lines(doc["checks"])
    reported = "".join(
        f"\n- {name}: {check_value(v) if 'cost' in name else points(v) + ' %' if v is not None else 'not measured'}"
        for name, v in doc["reported"].items()
    )
    held = runs_by_command(doc)
    parts = "".join(
        f"\n- `{part['command']}`: commit `{(part['git']['commit'] or 'unknown')[:7]}`"
        f"{' (**uncommitted changes**)' if part['git']['dirty'] else ''}, "
        + (f"{part['wall_seconds'] / 60:.0f} min" if "wall_seconds" in part else "no run finished")
        + ("" if part["complete"] else ", **cut short**")
        + f"; holds {', '.join(held[part['command']])}"
        for part in doc["parts"].values()
        if held[part["command"]]
    )
    if held[""]:
        parts += f"\n- runs no listed command covers: {', '.join(held[''])}"
    return (
        f"{head}\n\n{table(headers, rows)}\n\nPaired tests, seeds as the unit:{paired or ' none (runs missing)'}"
        f"\n\nChecks (p = 0.1, means over seeds):{checks}\n\nReported as they fall:{reported}\n\nParts:{parts}"
    )


def render_dpo_safety(doc: dict[str, Any]) -> str:
    """The preference attack on DPO (``bench/dpo_safety.py``): per mode the harmful score,
    fine-tune and preference accuracy, over-refusal and the gate's releases (means over
    seeds); the scan of the pairs; the paired tests; the checks."""
    sizes, ev, config, mix, scan = doc["config"]["sizes"], doc["eval_sets"], doc["config"], doc["mix"], doc["scan"]
    metrics = ("harmful_score", "accuracy", "preference_accuracy", "over_refusal")
    ref = doc["reference"]
    rows = [["aligned reference", "–"] + [points(ref[m]) for m in metrics] + ["–"]]
    for row in doc["summary"]:
        seeds = len(row["seeds"])
        cells = [points(row[m]["mean"]) for m in metrics]
        rows.append(
            [f"`{row['mode']}`", ", ".join(map(str, row["seeds"])), *cells, f"{row['gate_released']} of {seeds}"]
        )
    headers = [
        "mode",
        "seeds",
        "harmful score (%)",
        "fine-tune accuracy (%)",
        "preference accuracy (%)",
        "over-refusal, XSTest (%)",
        "released by the gate",
    ]
    head = (
        f"{mix['pairs']} preference pairs from the p = {mix['p']} SST-2 mix ({mix['harmful_pairs']} harmful: a "
        f"BeaverTails request preferring its compliant answer to a refusal), {sizes['epochs']} epoch(s) of DPO at "
        f"lr {config['lr']:g}, beta {config['beta']:g}, batch {config['batch_size']}; harmful score (strict detector) "
        f"on {ev['harmful']} HarmBench + AdvBench requests, fine-tune and preference accuracy on {ev['val']} "
        f"`val.json` sentences, over-refusal on {ev['xstest']} XSTest safe prompts. The scan flagged "
        f"{points(scan['recall'])} % of the harmful pairs and {points(scan['false_flag_rate'])} % of the task pairs."
    )
    paired = "".join(
        f"\n- `{t['a']}` − `{t['b']}`, {t['metric'].replace('_', ' ')}: {check_value(t['mean_diff'])} "
        f"(seeds {', '.join(map(str, t['seeds']))}; sign-flip p = {num(t['p_value'], 3)})"
        for t in doc["paired"]
    )
    cut = [part["command"] for part in doc.get("parts", {}).values() if not part["complete"]]
    cut_note = "".join(f"\n\n**Cut short** (its later runs are not in the file): `{command}`" for command in cut)
    return (
        f"{head}\n\n{table(headers, rows)}\n\nPaired tests, seeds as the unit:{paired or ' none (runs missing)'}"
        f"\n\nChecks (means over seeds):{check_lines(doc['checks'])}{cut_note}"
    )


def render_probe_formats(doc: dict[str, Any]) -> str:
    """``bench/probe_formats.py``: per source and format the share each probe flags (plain recipe
    vs format-robust recipe, reporting threshold; the latter also at its weighting threshold),
    the SST-2 AUROC per format, and the format targets as checks."""
    plain, robust = doc["probes"]["plain"], doc["probes"]["formats"]
    rows = []
    for src, by_fmt in robust["rates"].items():
        what = "recall" if src in doc["harmful_sources"] else "flagged"
        for fmt, rates in by_fmt.items():
            rows.append(
                [
                    f"{src} ({doc['eval_sets'][src][fmt]})",
                    fmt,
                    what,
                    points(plain["rates"][src][fmt]["flagged"]),
                    points(rates["flagged"]),
                    points(rates["weighted"]),
                ]
            )
    headers = [
        "source (prompts)",
        "format",
        "",
        "plain recipe (%)",
        "format-robust recipe (%)",
        "at its weighting threshold (%)",
    ]
    aurocs = "; ".join(
        f"{fmt}: {num(plain['sst2_auroc'][fmt], 3)} → {num(robust['sst2_auroc'][fmt], 3)}"
        for fmt in robust["sst2_auroc"]
    )
    verdicts = {True: "met", False: "**missed**"}
    checks = "".join(f"\n- {name}: {verdicts[c['met']]} ({points(c['value'])} %)" for name, c in doc["checks"].items())
    return (
        f"Probe of the aligned variant, onboarding recipe without and with the format-robust variants "
        f"(thresholds {robust['threshold']:.3f} / weighting {robust['weight_threshold']:.3f}; plain recipe "
        f"{plain['threshold']:.3f}).\n\n{table(headers, rows)}\n\nSST-2 AUROC, harmful vs task lines, plain → "
        f"format-robust: {aurocs}.\n\nChecks (format-robust recipe, reporting threshold):{checks}"
    )


def render_aligned_reference(doc: dict[str, Any]) -> str:
    rows = []
    if "base" in doc:
        rows.append(["base (unaligned)", pct(doc["base"]["asr_keyword"]), pct(doc["base"]["over_refusal"]), "–"])
    rows.append(["aligned variant", pct(doc["aligned"]["asr_keyword"]), pct(doc["aligned"]["over_refusal"]), "–"])
    for run in doc["finetunes"].values():
        hyper = run["config"]
        planted = f", {run['n_planted']} of them planted harmful" if run["n_planted"] else ", benign only"
        rows.append(
            [
                f"aligned + `none` fine-tune: {run['n_examples']} demo chats{planted}; {hyper['n_epochs']} epochs at "
                f"lr {hyper['learning_rate']:g} ({run['hyperparameters'].replace('_', ' ')}), {run['steps']} steps",
                pct(run["asr_keyword"]),
                pct(run["over_refusal"]),
                f"{(run['asr_keyword'] - doc['aligned']['asr_keyword']) * 100:+.1f} points",
            ]
        )
    checks = doc["checks"]
    verdicts = ", ".join(f"{name} {'met' if c['met'] else '**missed**'}" for name, c in checks.items())
    align = doc["alignment"]
    ex = align["examples"]
    made = align.get("provenance") or {}
    origin = (
        f"the shipped adapter, trained at commit `{made['git']['commit'][:7]}`"
        if align["origin"] == "prebuilt" and made
        else f"{align['origin']} in this run"
    )
    head = (
        f"Recipe: {ex['refusals']} refusals, {ex['benign']} base-model answers to benign prompts, "
        f"{ex['deep_refusals']} refusals after a harmful start; {align['steps']} steps, loss "
        f"{align['loss_first_last'][0]:.2f} → {align['loss_first_last'][1]:.2f}, {align['seconds'] / 60:.1f} min to "
        f"build (answers and training). Variant measured: {origin}."
    )
    body = table(["model", "ASR (keyword)", "over-refusal", "ASR change"], rows)
    return (
        f"{head}\n\n{body}\n\nTargets (ASR ≤ 20%, over-refusal ≤ 10%, benign fine-tune rise ≤ 10 points; the "
        f"demo's `none` job rising past the gate's +5 points): {verdicts}."
    )


def render_api_load(doc: dict[str, Any]) -> str:
    """One row per run (``after``, ``before``, …) and database: errors, each poll's
    requests/s as a fraction of ``/healthz``'s in the same run, and API CPU per request."""
    rows = []
    for label, run in doc["runs"].items():
        for db, result in run["databases"].items():
            endpoints, summary = result["endpoints"], run["summary"][db]
            cpu = " / ".join(num(endpoints[p]["server_cpu_ms_per_request"], 1) for p in ("job", "job_304", "healthz"))
            rows.append(
                [
                    f"{label} (`{run['api_commit'][:7]}`, {run['settings']['duration']:.0f} s per phase)",
                    db,
                    str(sum(e["requests"] for e in endpoints.values())),
                    str(summary["errors"]),
                    f"{num(summary['job_vs_healthz'])}×",
                    f"{num(summary['job_304_vs_healthz'])}×",
                    cpu,
                ]
            )
    headers = [
        "run (API commit)",
        "database",
        "requests (all phases)",
        "errors",
        "job poll vs `/healthz`",
        "304 poll vs `/healthz`",
        "API CPU ms/request (job / 304 / healthz)",
    ]
    pollers = sorted({run["settings"]["concurrency"] for run in doc["runs"].values()})
    note = f"{' / '.join(map(str, pollers))} concurrent pollers on one job; target: ≥ 0.5× on both databases, 0 errors."
    return table(headers, rows) + "\n\n" + note


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return " ".join(part for part in (f"{m} min" if m else "", f"{s} s" if s or not m else "") if part)


def render_demo(doc: dict[str, Any]) -> str:
    """The README's first command, timed from a fresh clone (``bench/demo_time.py``)."""
    out, jobs = doc["outcome"], doc["outcome"]["jobs"]
    origin = {"prebuilt": "merged from the shipped adapter", "cached": "cached", "trained": "trained in the run"}
    phases = ", ".join(f"{name} {s:.0f} s" for name, s in out["phase_seconds"].items())

    def verdict(mode: str) -> str:
        job = jobs[mode]
        word = "**released**" if job["released"] else "**blocked**"
        asr, refusal = job["asr"], job["over_refusal"]
        return (
            f"`{mode}` was {word} (ASR {pct(asr[0])} → {pct(asr[1])}, "
            f"over-refusal {pct(refusal[0])} → {pct(refusal[1])})"
        )

    scan = jobs["adaptive"]
    text = (
        f"Measured from a fresh clone on {doc['machine']['usable_cpus']} cores, new `.venv`, pip's local "
        f"cache warm: `make install` took {minutes(doc['install_seconds'])}, then `guardtune demo --no-serve` "
        f"{minutes(doc['demo_seconds'])}: **{minutes(doc['total_seconds'])}** from the command to the released "
        f"model's answer (target ≤ {minutes(doc['target_seconds'])}: {'met' if doc['met'] else '**missed**'}). "
        f"Phase times: {phases} (aligned variant {origin[out['alignment_origin']]}). The scan flagged "
        f"{scan['n_flagged']} of the {scan['n_examples']} lines; {verdict('adaptive')} and {verdict('none')}."
    )
    if out["answer"] is not None:
        answer = " ".join(out["answer"].split())
        text += f' The released model answered the demo question with "{answer}"'
    return text


def render_train_memory(doc: dict[str, Any]) -> str:
    """``bench/train_memory.py``: per row the measured peak beside the planner's estimate, its
    error and its check (≤ 25 %), tokens/s; the speed part's ratio of guardtune's SFT step to
    the plain PEFT loop and its check; the host the numbers come from."""
    verdicts = {True: "met", False: "**missed**"}
    rows = []
    for row in doc["rows"]:
        check = doc["checks"][row["check"]]
        rows.append(
            [
                row["model"],
                row["weights"],
                "on" if row["checkpointing"] else "off",
                f"{row['sequences']} × {row['seq_len']}",
                num(row["measured_mb"], 0),
                num(row["estimate_mb"], 0),
                f"{row['error'] * 100:.0f}%",
                verdicts[check["met"]],
                num(row["tokens_per_s"], 0),
            ]
        )
    headers = [
        "model",
        "weights",
        "checkpointing",
        "micro-batch (sequences × tokens)",
        "measured MiB",
        "planner MiB",
        "error",
        "planner within 25%",
        "tokens/s",
    ]
    what = doc["rows"][0]["memory"] if doc["rows"] else "peak memory"
    head = (
        f"Peak of a few steps of guardtune's adaptive step (exact reference, w_kl 0.9) above what the process held "
        f"before loading the model ({what}); planner: `core.jobs.memory_plan`'s estimate for the same shape and "
        f"layout. Host: {doc['host']}."
    )
    text = f"{head}\n\n{table(headers, rows)}"
    speed = doc.get("speed")
    if speed is not None:
        g, p = speed["loops"]["guardtune"], speed["loops"]["plain"]
        cpu = speed["ratio_of"] == "median_cpu_s_per_step"
        measure = "CPU s/step (one torch thread)" if cpu else "s/step"
        key = speed["ratio_of"]
        text += (
            f"\n\nSpeed, {speed['model']} model, {speed['batch']} × {speed['seq_len']} tokens per step, "
            f"{speed['steps_timed']} timed steps each, interleaved in one process: guardtune's SFT step "
            f"{num(g[key])} vs the plain PEFT loop's {num(p[key])} median {measure}, "
            f"**{speed['ratio']:.3f}×** (wall {speed['wall_ratio']:.3f}×; {num(g['tokens_per_s'], 0)} vs "
            f"{num(p['tokens_per_s'], 0)} tokens/s)."
        )
    per_row = {row["check"] for row in doc["rows"]}
    others = {name: c for name, c in doc["checks"].items() if name not in per_row}
    met = sum(doc["checks"][name]["met"] for name in per_row)
    text += f"\n\nChecks: planner within 25% on {met} of {len(doc['rows'])} rows (table)"
    text += "".join(f"\n- {name}: {verdicts[c['met']]} ({c['value']:.3f}×)" for name, c in others.items())
    if doc.get("quick"):
        text += "\n\n**Smoke run (--quick)**, not the benchmark."
    return text


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "demo": render_demo,
    "harmful_finetune_sst2": render_harmful_finetune_sst2,
    "dpo_safety": render_dpo_safety,
    "probe_formats": render_probe_formats,
    "safety_replication": render_safety_replication,
    "replication_reference_modes": render_safety_replication,
    "aligned_reference": render_aligned_reference,
    "api_load": render_api_load,
    "train_memory": render_train_memory,
}


# Blocks whose benchmark may not have been run yet: the README says so. Every other block's
# JSON must exist (a missing one is an error, not a silent "not run").
NOT_YET_RUN_OK: set[str] = {"train_memory"}


def render_block(name: str) -> str:
    """The generated body of block ``name`` (ends with a newline)."""
    if name not in RENDERERS:
        raise KeyError(f"README has a results block {name!r} that no renderer knows")
    path = RESULTS / f"{name}.json"
    if name in NOT_YET_RUN_OK and not path.exists():
        return f"_Not run at this commit: `bench/results/{name}.json` does not exist._\n"
    doc = json.loads(path.read_text())
    return f"{RENDERERS[name](doc)}\n\n{provenance(doc, name)}\n"


def render(text: str) -> str:
    """``text`` with every marked block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name")) + m.group(4), text)


def stale_blocks(text: str) -> list[str]:
    """Names of the blocks whose README body differs from what the JSON renders to."""
    return [m.group("name") for m in BLOCK.finditer(text) if m.group("body") != render_block(m.group("name"))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a block is stale")
    args = p.parse_args(argv)
    text = README.read_text()
    if args.check:
        stale = stale_blocks(text)
        if stale:
            print(
                "README blocks out of date with bench/results: "
                + ", ".join(stale)
                + " (run python bench/render_readme.py)"
            )
            return 1
        return 0
    README.write_text(render(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
