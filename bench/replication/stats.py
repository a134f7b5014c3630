"""Statistics over seeds and prompts: a rate's or loss's mean with a 95 % interval (percentile
bootstrap over prompts, each prompt's value averaged over seeds, so seeds and prompts are both
accounted for) and an exact paired test against the reference (McNemar on discordant prompt ×
seed pairs)."""

from __future__ import annotations

import math
import random


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def bootstrap_ci(outcomes: list[list[float]], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean (a success rate for booleans); ``outcomes[s][i]``: seed ``s``,
    prompt ``i``."""
    n = len(outcomes[0])
    per_prompt = [sum(run[i] for run in outcomes) / len(outcomes) for i in range(n)]
    rng = random.Random(seed)
    means = sorted(sum(per_prompt[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[min(n_boot - 1, int(0.975 * n_boot))]


def mcnemar_exact(run: list[list[bool]], reference: list[bool]) -> dict[str, float]:
    """Two-sided exact McNemar test of ``run`` (per seed, per prompt) against the reference's
    per-prompt outcomes: ``b`` = pairs where only the run succeeds, ``c`` = only the reference."""
    b = sum(r and not ref for seed in run for r, ref in zip(seed, reference))
    c = sum(ref and not r for seed in run for r, ref in zip(seed, reference))
    n, k = b + c, min(b, c)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return {"only_run": b, "only_reference": c, "p_value": p}


def summarize(outcomes: list[list[float]]) -> dict[str, object]:
    """``{"mean", "ci95", "per_seed"}`` of per-seed lists of per-prompt values (booleans for
    a rate)."""
    per_seed = [sum(run) / len(run) for run in outcomes]
    return {"mean": mean(per_seed), "ci95": list(bootstrap_ci(outcomes)), "per_seed": per_seed}


def within_each_other(a: dict[str, object], b: dict[str, object]) -> bool:
    """Whether each of two :func:`summarize` results has its mean inside the other's interval."""
    return b["ci95"][0] <= a["mean"] <= b["ci95"][1] and a["ci95"][0] <= b["mean"] <= a["ci95"][1]


def paired_by_seed(a: dict[int, float], b: dict[int, float]) -> dict[str, object]:
    """Paired comparison of two modes with seeds as the unit: per-seed differences ``a - b``
    over the seeds both ran, their mean, and the two-sided exact sign-flip (permutation) test
    of a zero mean difference (with n seeds its smallest p is 2 / 2**n)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return {"seeds": [], "diffs": [], "mean_diff": None, "p_value": None}
    observed = abs(sum(diffs))
    flips = [abs(sum(d if (mask >> i) & 1 else -d for i, d in enumerate(diffs))) for mask in range(2 ** len(diffs))]
    p = sum(f >= observed - 1e-12 for f in flips) / len(flips)
    return {"seeds": seeds, "diffs": diffs, "mean_diff": mean(diffs), "p_value": p}
