"""Probe calibration: metrics, the four-way split, layer search and the threshold.

Training splits the prompts four ways (:func:`split_indices`): the classifier is fitted
on one part, the layer set chosen on a second, the operating threshold (its harmful
verdict, ``p >= threshold``) calibrated on a third for a target FPR (default 5 %), and
the reported AUROC / TPR / FPR measured on a fourth that made no choice. The third also
sets the weighting threshold (:func:`threshold_for_recall`: the highest score keeping a
target recall, default 98 %), whose recall and false-flag rate the fourth measures. Thresholds
transfer imperfectly to other prompt distributions; ``bench/probe_quality.py``
measures the FPR at this threshold on unseen public benchmark prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from safety.generation import PromptLike
from safety.probe.features import (
    default_layers,
    extract_features,
    feature_columns,
    resolve_layers,
)
from safety.probe.heads import Probe, ProbeConfig, Weighting, fit_heads


@dataclass(frozen=True)
class ProbeReport:
    """Quality of a trained probe, each number from the split that was not used to make
    the choice it judges (see :func:`train_probe`).

    ``auroc``, ``tpr_at_threshold``, ``fpr_at_threshold``: on the ``test`` split, which
    chose nothing. ``threshold``: the operating threshold, set on the ``calibrate`` split
    for ``target_fpr``, where it gives ``calibrate_tpr`` / ``calibrate_fpr``.
    ``select_auroc``: the winning layer set's AUROC on the ``select`` split (optimistic:
    it is the maximum over ``candidates``, each with its select AUROC and log-loss).
    ``weight_threshold``: the weighting threshold, set on the ``calibrate`` split for
    ``target_recall`` (where it gives ``calibrate_weight_recall`` /
    ``calibrate_weight_fpr``); ``weight_recall`` / ``weight_fpr`` at it on ``test``."""

    auroc: float
    tpr_at_threshold: float
    fpr_at_threshold: float
    threshold: float
    target_fpr: float
    select_auroc: float
    calibrate_auroc: float
    calibrate_tpr: float
    calibrate_fpr: float
    weight_threshold: float
    target_recall: float
    weight_recall: float
    weight_fpr: float
    calibrate_weight_recall: float
    calibrate_weight_fpr: float
    n_fit: int
    n_select: int
    n_calibrate: int
    n_test: int
    n_harmful: int
    n_benign: int
    layers: tuple[int, ...]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve (labels 1 = positive), ties counted half (Mann-Whitney)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[float], target_fpr: float) -> tuple[float, float]:
    """``(tpr, threshold)`` of the rule ``score >= threshold`` with the highest TPR whose
    FPR is at most ``target_fpr``; the threshold is the lowest score meeting it."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    best_tpr, best_thr = 0.0, float(np.nextafter(s.max(), np.inf))
    for thr in np.unique(s)[::-1]:
        flagged = s >= thr
        fpr = float(flagged[~y].mean()) if (~y).any() else 0.0
        if fpr > target_fpr:
            break
        tpr = float(flagged[y].mean()) if y.any() else 0.0
        if tpr >= best_tpr:
            best_tpr, best_thr = tpr, float(thr)
    return best_tpr, best_thr


def threshold_for_recall(scores: Sequence[float], labels: Sequence[float], target_recall: float) -> float:
    """The highest threshold whose rule ``score >= threshold`` catches at least
    ``target_recall`` of the positives: the ``ceil(target_recall * n_pos)``-th highest
    positive score (ties only add positives)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.sort(s[np.asarray(labels, dtype=bool)])[::-1]
    if len(pos) == 0:
        raise ValueError("a recall threshold needs at least one positive")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    k = min(len(pos), max(1, math.ceil(target_recall * len(pos) - 1e-9)))
    return float(pos[k - 1])


def _log_loss(p: Sequence[float], y: Sequence[float]) -> float:
    pt = torch.tensor(list(p), dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    return float(nn.functional.binary_cross_entropy(pt, torch.tensor(list(y), dtype=torch.float64)))


def _rates(p: Sequence[float], y: Sequence[float], threshold: float) -> tuple[float, float]:
    """``(tpr, fpr)`` of the verdict ``p >= threshold`` (0.0 where a class is absent)."""
    pos = [pi >= threshold for pi, yi in zip(p, y) if yi]
    neg = [pi >= threshold for pi, yi in zip(p, y) if not yi]
    return (sum(pos) / len(pos) if pos else 0.0), (sum(neg) / len(neg) if neg else 0.0)


SPLITS = ("fit", "select", "calibrate", "test")


def split_indices(
    labels: Sequence[int], fractions: tuple[float, float, float], seed: int, groups: Sequence[Any] | None = None
) -> dict[str, list[int]]:
    """Disjoint ``fit`` / ``select`` / ``calibrate`` / ``test`` index lists.

    ``fractions`` are the shares of ``select``, ``calibrate`` and ``test``; ``fit`` gets
    the rest. Splitting is by group (default: every item its own group; variants of one
    prompt share a group, so no prompt leaks between splits) and stratified by the label
    of each group's first item; each part gets at least one group of each label when
    that label has four groups or more.
    """
    keys = list(groups) if groups is not None else list(range(len(labels)))
    if len(keys) != len(labels):
        raise ValueError("groups and labels differ in length")
    members: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in (0, 1):
        own = [key for key, idx in members.items() if int(labels[idx[0]]) == label]
        order = [own[i] for i in torch.randperm(len(own), generator=gen).tolist()]
        sizes = [round(len(own) * f) for f in fractions]
        if len(own) >= 4:
            sizes = [max(1, n) for n in sizes]
        cut = 0
        for name, n in zip(SPLITS[1:], sizes):
            out[name] += [i for key in order[cut : cut + n] for i in members[key]]
            cut += n
        out["fit"] += [i for key in order[cut:] for i in members[key]]
    return {name: sorted(idx) for name, idx in out.items()}


def _fit_probe(feats: torch.Tensor, y: torch.Tensor, layers: tuple[int, ...], config: ProbeConfig) -> Probe:
    x = feats.mean(dim=1)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    heads = fit_heads((x - mean) / std, y, config)
    return Probe(
        layers=layers,
        kind=config.kind,
        pool=config.pool,
        max_len=config.max_len,
        hidden_units=config.hidden_units,
        mean=mean,
        std=std,
        heads=heads,
        threshold=0.5,
    )


def train_probe_on_features(
    features: torch.Tensor,
    labels: Sequence[int],
    feature_layers: Sequence[int],
    config: ProbeConfig = ProbeConfig(),
    *,
    layer_candidates: Sequence[Sequence[int]] | None = None,
    groups: Sequence[Any] | None = None,
) -> tuple[Probe, ProbeReport]:
    """:func:`train_probe` on precomputed :func:`extract_features` output.

    ``features[:, j]`` holds layer ``feature_layers[j]`` (already resolved indices);
    ``labels`` are 1 (harmful) / 0 (benign); ``groups`` as in :func:`split_indices`.
    Candidates (default: all of ``feature_layers`` as one set) must be subsets of
    ``feature_layers``.
    """
    y = torch.tensor(list(labels), dtype=torch.float32)
    candidates = [tuple(c) for c in layer_candidates] if layer_candidates else [tuple(feature_layers)]
    parts = {
        k: torch.tensor(v, dtype=torch.long)
        for k, v in split_indices(labels, config.split, config.seed, groups).items()
    }
    for name in SPLITS:
        if len(set(y[parts[name]].tolist())) < 2:
            raise ValueError(f"too few prompts: the {name} split lacks one of the two classes")

    def scores(probe: Probe, cols: list[int], part: str) -> tuple[list[float], list[float]]:
        return probe.predict_proba_features(features[parts[part]][:, cols]).tolist(), y[parts[part]].tolist()

    best: tuple[tuple[float, float], tuple[int, ...]] | None = None
    tried = []
    for cand in candidates:
        cols = feature_columns(feature_layers, cand)
        sel_p, sel_y = scores(
            _fit_probe(features[parts["fit"]][:, cols], y[parts["fit"]], cand, config), cols, "select"
        )
        score, loss = auroc(sel_p, sel_y), _log_loss(sel_p, sel_y)
        tried.append({"layers": list(cand), "select_auroc": score, "select_log_loss": loss})
        if best is None or (score, -loss) > best[0]:
            best = ((score, -loss), cand)
    assert best is not None
    (select_auroc, _), chosen = best
    cols = feature_columns(feature_layers, chosen)
    train_idx = torch.cat([parts["fit"], parts["select"]])
    probe = _fit_probe(features[train_idx][:, cols], y[train_idx], chosen, config)
    cal_p, cal_y = scores(probe, cols, "calibrate")
    probe.threshold = max(config.min_threshold, tpr_at_fpr(cal_p, cal_y, config.target_fpr)[1])
    cal_tpr, cal_fpr = _rates(cal_p, cal_y, probe.threshold)
    weight_threshold = threshold_for_recall(cal_p, cal_y, config.target_recall)
    cal_weight_recall, cal_weight_fpr = _rates(cal_p, cal_y, weight_threshold)
    test_p, test_y = scores(probe, cols, "test")
    test_tpr, test_fpr = _rates(test_p, test_y, probe.threshold)
    weight_recall, weight_fpr = _rates(test_p, test_y, weight_threshold)
    probe.weighting = Weighting(
        threshold=weight_threshold, target_recall=config.target_recall, recall=weight_recall, false_flag_rate=weight_fpr
    )
    n_pos = int(y.sum())
    report = ProbeReport(
        auroc=auroc(test_p, test_y),
        tpr_at_threshold=test_tpr,
        fpr_at_threshold=test_fpr,
        threshold=probe.threshold,
        target_fpr=config.target_fpr,
        select_auroc=select_auroc,
        calibrate_auroc=auroc(cal_p, cal_y),
        calibrate_tpr=cal_tpr,
        calibrate_fpr=cal_fpr,
        weight_threshold=weight_threshold,
        target_recall=config.target_recall,
        weight_recall=weight_recall,
        weight_fpr=weight_fpr,
        calibrate_weight_recall=cal_weight_recall,
        calibrate_weight_fpr=cal_weight_fpr,
        n_fit=len(parts["fit"]),
        n_select=len(parts["select"]),
        n_calibrate=len(parts["calibrate"]),
        n_test=len(parts["test"]),
        n_harmful=n_pos,
        n_benign=len(y) - n_pos,
        layers=probe.layers,
        candidates=tried,
    )
    return probe, report


def train_probe(
    model: Any,
    tokenizer: Any,
    harmful_texts: Sequence[PromptLike],
    benign_texts: Sequence[PromptLike],
    config: ProbeConfig = ProbeConfig(),
    *,
    layer_candidates: Sequence[Sequence[int]] | None = None,
    groups: Sequence[Any] | None = None,
) -> tuple[Probe, ProbeReport]:
    """Train a probe on harmful vs benign prompts; calibrate it; report on unseen prompts.

    The prompts (``groups`` aligned with ``harmful_texts + benign_texts``) are split by
    :func:`split_indices` into four disjoint parts, each with its own job:

    1. ``fit``: every candidate layer set's ensemble of ``config.heads`` heads is trained here;
    2. ``select``: the candidate whose ensemble has the best AUROC here wins (ties: lower
       log-loss, then the earlier candidate), and the returned probe is that layer set
       refitted on ``fit`` + ``select``;
    3. ``calibrate``: the threshold is the lowest score whose FPR here is at most
       ``config.target_fpr`` (never below ``config.min_threshold``), and the weighting
       threshold the highest score whose recall here is at least ``config.target_recall``;
    4. ``test``: never used for either choice; the report's ``auroc``,
       ``tpr_at_threshold`` / ``fpr_at_threshold`` and ``weight_recall`` / ``weight_fpr``
       are measured here.

    Without ``layer_candidates`` the probe reads ``config.layers`` (or
    :func:`default_layers`).
    """
    num_layers = model.config.num_hidden_layers
    base = resolve_layers(config.layers or default_layers(num_layers), num_layers)
    candidates = [resolve_layers(c, num_layers) for c in layer_candidates] if layer_candidates else [base]
    needed = sorted({layer for c in candidates for layer in c})
    feats = extract_features(
        model,
        tokenizer,
        list(harmful_texts) + list(benign_texts),
        needed,
        pool=config.pool,
        batch_size=config.feature_batch_size,
        max_len=config.max_len,
    )
    labels = [1] * len(harmful_texts) + [0] * len(benign_texts)
    return train_probe_on_features(feats, labels, needed, config, layer_candidates=candidates, groups=groups)
