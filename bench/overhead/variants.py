"""The variants of the training-overhead benchmark and the data each trains on.

Contracts: :data:`VARIANTS` is the order of ``--variants``' default and of the result
file's ``variants``; every variant has a :data:`DESCRIPTIONS` line and a data set in
:data:`DATASET_OF`; :func:`build_dataset` is deterministic.
"""

from __future__ import annotations

import json
from typing import Any

from bench.common import REPO

VARIANTS = ("a", "a_benign", "b", "c", "e", "d")


TOPKS = (8, 16, 32, 64)


DESCRIPTIONS = {
    "a": "plain PEFT SFT loop (baseline), harmful-ish data",
    "a_benign": "plain PEFT SFT loop, benign data (baseline of c)",
    "b": "guardtune adaptive, kl bounds [0.1, 0.9], risk 5: KL every step",
    "c": "guardtune adaptive, kl bounds [0, 0.9], risk 1: reference pass skipped",
    "e": "guardtune adaptive, reference cached (top-k from the scan's one pass before training), risk 5",
    "d": "paper-style: 2nd full reference model + probe risk per batch + KL every step",
}


DATASET_OF = {"a": "harmful", "a_benign": "benign", "b": "harmful", "c": "benign", "d": "harmful", "e": "harmful"}


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
