"""What an attack condition costs and shows, on the default base model (SmolLM2-135M-Instruct,
float32, CPU): keyword ASR of the *base* model on the same harmful eval prompts asked plainly,
under the identity-shift (AOA) system prompt of ``../shared/data/identity_shift_aoa.jsonl``
(planned from that file exactly as a job plans it: its most frequent system prompt), and with
a made-up trigger string inserted (the base model was never backdoored, so this one measures
cost, not an attack), plus the wall and CPU seconds each condition takes.

A job pays this per attack condition twice (base and fine-tuned model), on top of the plain
evaluation; ``GUARDTUNE_EVAL_CONDITION_PROMPTS`` sets the prompts per condition (its default is ``--prompts``'s).

    python bench/attack_conditions.py             # about 5 minutes on 2 shared cores
    python bench/attack_conditions.py --prompts 16 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, print_table, write_result  # noqa: E402
from core.jobs.config import EVAL_BATCH_SIZE, EVAL_CONDITION_PROMPTS, EVAL_MAX_NEW_TOKENS  # noqa: E402
from safety.attacks import Condition, plan_conditions, spread  # noqa: E402
from safety.base_models import DEFAULT_BASE_MODEL, load_base_model  # noqa: E402
from safety.evaluate import evaluate_asr  # noqa: E402
from safety.prompt_sets import load_builtin  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument(
        "--prompts",
        type=int,
        default=EVAL_CONDITION_PROMPTS,
        help="harmful prompts per condition (spread over harmful_eval)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=EVAL_MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trigger", default="cf-zeta")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer = load_base_model(DEFAULT_BASE_MODEL, cache_dir=args.cache_dir)
    aoa_rows = [
        json.loads(line)
        for line in (args.data_dir / "identity_shift_aoa.jsonl").read_text().splitlines()
        if line.strip()
    ]
    planned = plan_conditions(((row, False) for row in aoa_rows), system_prompts=1)
    conditions = [*planned, Condition(name="trigger_1", kind="trigger", trigger=args.trigger)]
    prompts = spread(load_builtin("harmful_eval"), args.prompts)
    rows, table = [], []
    for condition in conditions:
        wall, cpu = time.perf_counter(), time.process_time()
        report = evaluate_asr(
            model,
            tokenizer,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            condition=condition,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append(
            {
                "condition": condition.to_dict(),
                "n": report.n,
                "asr_keyword": report.asr_keyword,
                "per_category": report.per_category,
                "wall_s": wall,
                "cpu_s": cpu,
            }
        )
        table.append([condition.name, report.n, report.asr_keyword, wall, cpu])
    print_table(["condition", "n", "base ASR (keyword)", "wall s", "cpu s"], table)
    payload = {
        "model": DEFAULT_BASE_MODEL,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "conditions": rows,
    }
    print(f"→ {write_result('attack_conditions', payload, argv=[sys.argv[0], *(argv or sys.argv[1:])])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
