"""Peak training memory and speed on the CPU (or one GPU), beside the memory planner's estimate
(issue 27, item 5) — entry point of ``bench/train_memory.py``.

Memory (``bench.train_mem.rows``): each row in a fresh process, so that peaks do not mix:
model (the tiny random model, the default SmolLM2-135M-Instruct) × frozen weights (fp32, bf16;
nf4 = QLoRA on CUDA) × activation checkpointing (off, on) × micro-batch (sequences of
``--seq-len`` tokens), a few steps of guardtune's adaptive step with the exact reference; the
peak above the process's memory before loading the model, tokens/s, and the planner's
estimate with its error. Check per row: error ≤ 25 %.

Speed (``bench.train_mem.speed``): guardtune's SFT step against a plain PEFT loop on the same
model and batches, interleaved in one process, medians of per-step times. Check: ratio ≤ 1.05.

The CPU numbers come from a host whose cores other work shares: the A/B interleaving and the
medians are there for that, and the result file says so (``host``).

    python bench/train_memory.py                      # the full grid (the result records its wall_seconds)
    python bench/train_memory.py --quick --dirty-ok   # tiny model only, a smoke run
    python bench/train_memory.py --device cuda --weights bf16,nf4 --out bench/results/gpu_train_memory_cuda.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench.common import REPO, RESULTS_DIR, add_size_options, chosen_sizes, json_safe, machine_info
from bench.train_mem.rows import WEIGHT_DTYPES, Row, grid

ENTRY = REPO / "bench" / "train_memory.py"
ERROR_TARGET = 0.25  # |estimate − measured| / measured, per row
SPEED_TARGET = 1.05  # guardtune's SFT step / the plain loop's, medians


@dataclass(frozen=True)
class Sizes:
    seq_len: int = 512  # tokens of every sequence
    warmup: int = 1  # untimed steps before the timed ones (memory rows and each loop of the speed part)
    steps: int = 2  # timed steps per memory row
    speed_batch: int = 4  # sequences per step of the speed part
    speed_steps: int = 8  # timed steps of each loop in the speed part


FULL = Sizes()
QUICK = Sizes(seq_len=128, steps=1, speed_batch=2, speed_steps=3)
HOST = {
    "cpu": "CPU, cores shared with other work (loaded host): speed loops interleaved in one process, medians",
    "cuda": "one GPU: memory is torch.cuda.max_memory_allocated",
}


def row_check(row: dict[str, Any]) -> str:
    """The name of ``row``'s check."""
    return f"planner_error_le_{ERROR_TARGET} [{row['name']}]"


def checks(rows: list[dict[str, Any]], speed: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The targets, name → ``{value, met}``: each row's planner error ≤ 25 % (named by
    :func:`row_check`), and guardtune's SFT step ≤ 1.05 × the plain loop's (when the speed
    part ran)."""
    out = {row_check(row): {"value": row["error"], "met": row["error"] <= ERROR_TARGET} for row in rows}
    if speed is not None:
        out[f"sft_step_vs_plain_loop_le_{SPEED_TARGET}"] = {
            "value": speed["ratio"],
            "met": speed["ratio"] <= SPEED_TARGET,
        }
    return out


def run_child(kind: str, spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``kind`` (``row`` or ``speed``) with ``spec`` in a fresh process on this script; its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    argv = [sys.executable, str(ENTRY), "--child", kind, "--child-spec", json.dumps(spec), "--child-out", str(out)]
    argv += ["--device", args.device, "--cache-dir", args.cache_dir, "--threads", str(args.threads)]
    try:
        proc = subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"{kind} {spec} failed with exit code {proc.returncode}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    finally:
        out.unlink(missing_ok=True)


def child(args: argparse.Namespace) -> None:
    from bench.train_mem.rows import measure_row
    from bench.train_mem.speed import compare_loops

    spec = json.loads(args.child_spec)
    where = {"device": args.device, "cache_dir": Path(args.cache_dir), "threads": args.threads}
    if args.child == "row":
        row = Row(**spec.pop("row"))
        result = measure_row(row, **where, **spec)
    else:
        result = compare_loops(**spec, **where)
    Path(args.child_out).write_text(json.dumps(json_safe(result)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    sizes = chosen_sizes(args, FULL, QUICK)
    weights = split(args.weights or "fp32,bf16")
    if "nf4" in weights and args.device != "cuda":
        raise SystemExit("--weights nf4 (QLoRA) needs --device cuda")
    if set(weights) - set(WEIGHT_DTYPES):
        raise SystemExit(f"--weights: {', '.join(WEIGHT_DTYPES)}")
    git = common.git_of_clean_tree(args.dirty_ok)
    if git is None:
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gt-trainmem-tiny-") as tmp:
        sources = model_sources(split(args.models or ("tiny" if args.quick else "tiny,default")), Path(tmp))
        micro = [int(n) for n in split(args.micro_batches or ("1,2" if args.quick else "1,4"))]
        rows = []
        for row in grid(sources, weights, micro, sizes.seq_len):
            spec = {"row": dataclasses.asdict(row), "warmup": sizes.warmup, "steps": sizes.steps}
            result = run_child("row", spec, args)
            rows.append({**result, "check": row_check(result)})
            print(
                f"{row.name:45s} measured {result['measured_mb']:8.1f} MiB  planner {result['estimate_mb']:8.1f} MiB  "
                f"error {result['error'] * 100:5.1f} %  {result['tokens_per_s']:7.1f} tok/s",
                flush=True,
            )
        speed = None
        speed_model = args.speed_model or ("tiny" if args.quick else "default")
        if speed_model != "none":
            spec = {
                "source": model_sources([speed_model], Path(tmp))[speed_model],
                "batch": sizes.speed_batch,
                "seq_len": sizes.seq_len,
                "warmup": sizes.warmup,
                "steps": sizes.speed_steps,
            }
            speed = {**run_child("speed", spec, args), "model": speed_model}
            print(
                f"speed ({speed_model}): guardtune SFT step / plain loop = {speed['ratio']:.3f} ({speed['ratio_of']}), "
                f"wall {speed['wall_ratio']:.3f}",
                flush=True,
            )
    doc: dict[str, Any] = {
        "benchmark": "train_memory",
        "command": "python " + " ".join(["bench/train_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "git": {**git, "dirty_ok": bool(args.dirty_ok)},
        "machine": machine_info(),
        "host": HOST[args.device],
        "quick": bool(args.quick),
        "sizes": dataclasses.asdict(sizes),
        "rows": rows,
        "speed": speed,
        "checks": checks(rows, speed),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return 0


def model_sources(names: list[str], tmp: Path) -> dict[str, str]:
    """What ``load_base_model`` loads for each name: ``tiny`` (made in ``tmp`` once), ``default``
    (the default built-in) or any other built-in name or model folder, as given."""
    from safety.base_models import DEFAULT_BASE_MODEL, make_tiny_model

    def source(name: str) -> str:
        if name == "tiny":
            if not (tmp / "tiny" / "config.json").is_file():
                make_tiny_model(tmp / "tiny")
            return str(tmp / "tiny")
        return DEFAULT_BASE_MODEL if name == "default" else name

    return {name: source(name) for name in names}


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tiny model only, short sequences (a smoke run)")
    add_size_options(p, FULL, QUICK)
    p.add_argument(
        "--models", help="tiny, default, or a built-in name / model folder (default tiny,default; quick tiny)"
    )
    p.add_argument("--weights", help=f"frozen weights' dtypes among {', '.join(WEIGHT_DTYPES)} (default fp32,bf16)")
    p.add_argument("--micro-batches", help="sequences per micro-batch (default 1,4; quick 1,2)")
    p.add_argument("--speed-model", help="model of the speed part, or none (default: default; quick: tiny)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; see train_overhead)")
    p.add_argument("--cache-dir", default=str(REPO / "var" / "models"), help="where built-in models are converted")
    p.add_argument("--out", default=str(RESULTS_DIR / "train_memory.json"))
    p.add_argument("--dirty-ok", action="store_true", help="record results from a dirty tree (marked in the JSON)")
    p.add_argument("--child", choices=("row", "speed"), help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = chosen_sizes(args, FULL, QUICK)
    if sizes.warmup < 1 or sizes.steps < 1 or sizes.speed_steps < 1:
        p.error("--warmup, --steps and --speed-steps must be ≥ 1")
    return args
