"""Render README's training-overhead table from ``bench/results/train_overhead.json``.

    python bench/render_overhead.py          # rewrite the block between the markers in README.md
    python bench/render_overhead.py --check  # exit 1 if README's block differs from the JSON

The block lies between ``<!-- train_overhead:begin -->`` and ``<!-- train_overhead:end -->``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "bench" / "results" / "train_overhead.json"
BEGIN, END = "<!-- train_overhead:begin -->", "<!-- train_overhead:end -->"
NAMES = {
    "a": "SFT (plain PEFT loop)",
    "b": "adaptive, exact reference",
    "e": "adaptive, cached reference",
    "d": "paper-style (2nd model copy)",
}


def render(result: dict[str, Any]) -> str:
    """The markdown block (markers included) for ``result``."""
    v, jobs = result["variants"], result["jobs"]
    a = v["a"]
    s = result["settings"]
    lines = [
        BEGIN,
        (
            f"`{result['command']}` at commit `{(result['git']['commit'] or '?')[:7]}`, batch {s['batch_size']}; "
            "CPU time (process time, one torch thread), ratios to SFT; a job is its steps plus the scan every "
            "guardtune job runs before training (SFT's and exact's: the probe-only scan; cached: the scan's one "
            "forward that also fills the cache)."
        ),
        "",
        "| variant | CPU s/step | × SFT per step | peak RSS × SFT | 1-epoch job × SFT | 3-epoch job × SFT |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("a", "b", "e", "d"):
        r = v[key]
        lines.append(
            f"| {NAMES[key]} | {r['cpu_s_per_step']:.2f} | {r['cpu_s_per_step'] / a['cpu_s_per_step']:.2f} | "
            f"{r['peak_rss_mb'] / a['peak_rss_mb']:.2f} | {jobs['cpu_s']['1'][key] / jobs['cpu_s']['1']['a']:.2f} | "
            f"{jobs['cpu_s']['3'][key] / jobs['cpu_s']['3']['a']:.2f} |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for name, t in jobs["targets"].items():
        lines.append(f"| {name.replace('_', ' ')} {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else 'no'} |")
    gap = v["e"]["kl_gap_by_k"]
    lines += ["", "| k (cached top-k) | cached KL / exact KL | KiB per 1k answer tokens |", "|---|---|---|"]
    for k, g in gap.items():
        if k.isdigit():
            lines.append(f"| {k} | {g['kl_ratio']:.3f} | {g['bytes_per_1k_answer_tokens'] / 1024:.0f} |")
    lines.append(END)
    return "\n".join(lines)


def replace_block(readme: str, block: str) -> str:
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + block + readme[end:]


def main() -> int:
    readme_path = REPO / "README.md"
    readme = readme_path.read_text()
    updated = replace_block(readme, render(json.loads(RESULT.read_text())))
    if "--check" in sys.argv:
        return 0 if updated == readme else 1
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
