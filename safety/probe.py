"""Activation probe: a harmful-vs-benign classifier on the reference model's hidden states.

Features. Each prompt is rendered with the chat template up to the assistant turn
(``add_generation_prompt=True``) and run through the frozen reference model. The
residual stream after decoder block ``i`` (``0`` = token embeddings, negative indices
count from the last block) is averaged over the prompt's tokens (``pool="mean"``: all
real tokens; ``pool="content"``: only the tokens between the chat template's fixed
prefix and suffix, so the constant system prompt and headers do not dilute the mean),
then averaged over the configured layer set. Forward passes stop after the deepest
layer needed, so a middle-layer probe costs less than a full forward pass.

Classifier. Standardized features (train-split mean and std) into a logistic
regression (``kind="logistic"``) or a one-hidden-layer MLP (``kind="mlp"``), trained
with Adam on binary cross-entropy plus an L2 penalty on the weights.

Training splits the prompts four ways (:func:`split_indices`): the classifier is fitted
on one part, the layer set chosen on a second, the operating threshold (its harmful
verdict, ``p >= threshold``) calibrated on a third for a target FPR (default 5 %), and
the reported AUROC / TPR / FPR measured on a fourth that made no choice. Thresholds
transfer imperfectly to other prompt distributions; ``bench/probe_quality.py``
measures the FPR at this threshold on unseen public benchmark prompts.

Persistence is ``probe.safetensors`` (tensors) + ``probe.json`` (everything else).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from safety.generation import (
    PromptLike,
    model_device,
    pad_batch,
    pad_token_id,
    position_ids_from_mask,
    render_prompt,
)

ProbeKind = Literal["logistic", "mlp"]
Pooling = Literal["mean", "content"]
RiskMode = Literal["calibrated", "binary"]

_TENSORS_FILE = "probe.safetensors"
_META_FILE = "probe.json"


@dataclass(frozen=True)
class ProbeConfig:
    """Probe hyper-parameters.

    ``layers=None`` means :func:`default_layers`: the mean over the middle-to-late band
    of blocks (40 %-80 % of the depth). The defaults (content pooling, 512-unit MLP,
    light L2) are the ones that generalised best to unseen benchmark prompts on the
    default base model (``bench/results/probe_quality.json``).
    ``batch_size`` is the classifier's minibatch; ``feature_batch_size`` the number of
    prompts per forward pass of the reference model. ``split`` is the share of the
    prompts that chooses the layers, sets the threshold and measures the report (the
    rest fits the classifier; see :func:`train_probe`). The operating threshold keeps
    the calibration split's FPR within ``target_fpr`` and is at least ``min_threshold``.
    """

    layers: tuple[int, ...] | None = None
    kind: ProbeKind = "mlp"
    pool: Pooling = "content"
    epochs: int = 50
    lr: float = 1e-2
    weight_decay: float = 1e-3
    batch_size: int = 64
    max_len: int = 512
    seed: int = 0
    hidden_units: int = 512
    split: tuple[float, float, float] = (0.15, 0.2, 0.2)
    target_fpr: float = 0.05
    min_threshold: float = 0.5
    feature_batch_size: int = 16


@dataclass(frozen=True)
class ProbeReport:
    """Quality of a trained probe, each number from the split that was not used to make
    the choice it judges (see :func:`train_probe`).

    ``auroc``, ``tpr_at_threshold``, ``fpr_at_threshold``: on the ``test`` split, which
    chose nothing. ``threshold``: the operating threshold, set on the ``calibrate`` split
    for ``target_fpr``, where it gives ``calibrate_tpr`` / ``calibrate_fpr``.
    ``select_auroc``: the winning layer set's AUROC on the ``select`` split (optimistic:
    it is the maximum over ``candidates``, each with its select AUROC and log-loss)."""

    auroc: float
    tpr_at_threshold: float
    fpr_at_threshold: float
    threshold: float
    target_fpr: float
    select_auroc: float
    calibrate_auroc: float
    calibrate_tpr: float
    calibrate_fpr: float
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


# ---------------------------------------------------------------------------------------
# Metrics


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
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


def tpr_at_fpr(
    scores: Sequence[float], labels: Sequence[int], target_fpr: float
) -> tuple[float, float]:
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


def risk_from_p(p: float, mode: RiskMode = "calibrated", threshold: float = 0.5) -> float:
    """Map a harmful probability to the 1-5 risk scale: ``1 + 4p`` (calibrated) or the
    paper's verdict mapping, 5 if ``p >= threshold`` else 1 (binary)."""
    if mode == "binary":
        return 5.0 if p >= threshold else 1.0
    if mode == "calibrated":
        return 1.0 + 4.0 * p
    raise ValueError(f"unknown risk mode {mode!r}")


# ---------------------------------------------------------------------------------------
# Features


class _StopForward(Exception):
    """Raised by the hook on the deepest needed layer to skip the rest of the model."""


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    n = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError("could not find the decoder layer list of the model")


def resolve_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Normalise layer indices to ``0..num_layers`` (negative ones count from the end)."""
    out = []
    for layer in layers:
        idx = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= idx <= num_layers:
            raise ValueError(f"layer {layer} out of range for a {num_layers}-layer model")
        out.append(idx)
    return tuple(out)


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Blocks from 40 % to 80 % of the depth (12-24 of 30), averaged by the probe."""
    first = max(1, round(num_layers * 0.4))
    return tuple(range(first, max(first, round(num_layers * 0.8)) + 1))


def layer_candidates(num_layers: int) -> list[tuple[int, ...]]:
    """Layer sets worth trying, chosen among by validation AUROC: the default band first,
    then other middle-to-late ranges, then single layers every 4 blocks."""
    ranges = [default_layers(num_layers)] + [
        tuple(range(round(num_layers * a), round(num_layers * b) + 1))
        for a, b in ((0.27, 0.53), (0.33, 0.67), (0.5, 0.83))
    ]
    singles = [(layer,) for layer in range(round(num_layers * 0.2), num_layers, 4)]
    return ranges + singles


def _template_bounds(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids of the chat template's fixed prefix and suffix around a user message."""
    a = tokenizer(render_prompt(tokenizer, "\u00a7"), add_special_tokens=False)["input_ids"]
    b = tokenizer(render_prompt(tokenizer, "\u00b6 x"), add_special_tokens=False)["input_ids"]
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    return a[:pre], a[len(a) - suf :]


def _content_span(ids: list[int], prefix: list[int], suffix: list[int]) -> tuple[int, int]:
    """``[start, end)`` of the tokens not matching the template prefix/suffix (never empty)."""
    start = 0
    while start < min(len(ids), len(prefix)) and ids[start] == prefix[start]:
        start += 1
    suf = 0
    while (
        suf < len(suffix)
        and len(ids) - suf - 1 >= start
        and ids[len(ids) - 1 - suf] == suffix[len(suffix) - 1 - suf]
    ):
        suf += 1
    end = len(ids) - suf
    if end <= start:
        return 0, len(ids)
    return start, end


def extract_features(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    layers: Sequence[int],
    *,
    pool: Pooling = "content",
    batch_size: int = 16,
    max_len: int = 512,
    padding_side: Literal["left", "right"] = "right",
) -> torch.Tensor:
    """Pooled hidden states, float32 ``[len(prompts), len(layers), hidden]``.

    Prompts longer than ``max_len`` tokens keep their last ``max_len`` tokens (so the
    assistant header stays). Runs under ``torch.no_grad`` in eval mode.
    """
    num_layers = model.config.num_hidden_layers
    wanted = resolve_layers(layers, num_layers)
    deepest = max(wanted)
    prefix, suffix = _template_bounds(tokenizer) if pool == "content" else ([], [])
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    captured: dict[int, torch.Tensor] = {}
    weights: torch.Tensor | None = None

    def hook_for(index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            assert weights is not None
            captured[index] = torch.einsum("bt,bth->bh", weights, hidden.float())
            if index == deepest:
                raise _StopForward

        return hook

    modules = {0: model.get_input_embeddings()}
    modules.update({i + 1: m for i, m in enumerate(_decoder_layers(model))})
    handles = [modules[i].register_forward_hook(hook_for(i)) for i in sorted(set(wanted))]
    encoded = [
        tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"][-max_len:]
        for p in prompts
    ]
    # Batches of similar length waste less compute on padding; results go back in order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    model.eval()
    out = torch.zeros((len(prompts), len(wanted), model.config.hidden_size), dtype=torch.float32)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            token_lists = [encoded[i] for i in rows]
            spans = [
                _content_span(ids, prefix, suffix) if pool == "content" else (0, len(ids))
                for ids in token_lists
            ]
            ids_t, mask = pad_batch(token_lists, pad_id, padding_side)
            pool_mask = torch.zeros(mask.shape, dtype=torch.float32)
            for row, (ids, (s, e)) in enumerate(zip(token_lists, spans)):
                offset = mask.shape[1] - len(ids) if padding_side == "left" else 0
                pool_mask[row, offset + s : offset + e] = 1.0
            weights = (pool_mask / pool_mask.sum(dim=1, keepdim=True)).to(device)
            captured.clear()
            with torch.no_grad():
                try:
                    model(
                        input_ids=ids_t.to(device),
                        attention_mask=mask.to(device),
                        position_ids=position_ids_from_mask(mask).to(device),
                        use_cache=False,
                    )
                except _StopForward:
                    pass
            out[rows] = torch.stack([captured[i] for i in wanted], dim=1).cpu()
    finally:
        for h in handles:
            h.remove()
    return out


# ---------------------------------------------------------------------------------------
# Classifier


def _make_head(kind: ProbeKind, dim: int, hidden_units: int) -> nn.Module:
    if kind == "logistic":
        return nn.Linear(dim, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, hidden_units), nn.ReLU(), nn.Linear(hidden_units, 1))
    raise ValueError(f"unknown probe kind {kind!r}")


def _fit_head(x: torch.Tensor, y: torch.Tensor, config: ProbeConfig) -> nn.Module:
    """Adam on BCE + ``weight_decay/2 * ||W||^2`` (weights only), seeded minibatches."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = _make_head(config.kind, x.shape[1], config.hidden_units)
        opt = torch.optim.Adam(head.parameters(), lr=config.lr)
        weights = [p for name, p in head.named_parameters() if name.endswith("weight")]
        loss_fn = nn.BCEWithLogitsLoss()
        for _ in range(config.epochs):
            for idx in torch.randperm(len(x)).split(config.batch_size):
                loss = loss_fn(head(x[idx]).squeeze(-1), y[idx])
                loss = loss + 0.5 * config.weight_decay * sum((w**2).sum() for w in weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
    head.eval()
    return head


@dataclass
class Probe:
    """A trained probe: which states to read and the classifier on top."""

    layers: tuple[int, ...]
    kind: ProbeKind
    pool: Pooling
    max_len: int
    hidden_units: int
    mean: torch.Tensor
    std: torch.Tensor
    head: nn.Module
    threshold: float

    def predict_proba_features(
        self, features: torch.Tensor, feature_layers: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Harmful probabilities from :func:`extract_features` output: for exactly
        ``self.layers``, or for ``feature_layers`` (a superset; columns are picked)."""
        if feature_layers is not None:
            features = features[:, _columns(feature_layers, self.layers)]
        if features.shape[1:] != (len(self.layers), self.mean.shape[0]):
            raise ValueError(
                f"features of shape {tuple(features.shape[1:])} do not fit this probe "
                f"({len(self.layers)} layers x {self.mean.shape[0]} hidden): wrong model?"
            )
        x = (features.mean(dim=1) - self.mean) / self.std
        with torch.no_grad():
            return torch.sigmoid(self.head(x).squeeze(-1))

    def predict_proba(
        self, model: Any, tokenizer: Any, prompts: Sequence[PromptLike], batch_size: int = 16
    ) -> list[float]:
        """Harmful probability of each prompt (a string or a message list)."""
        feats = extract_features(
            model, tokenizer, prompts, self.layers,
            pool=self.pool, batch_size=batch_size, max_len=self.max_len,
        )
        return [float(p) for p in self.predict_proba_features(feats)]

    def risk(self, p: float, mode: RiskMode = "calibrated") -> float:
        """:func:`risk_from_p` with this probe's threshold."""
        return risk_from_p(p, mode, self.threshold)

    def save(self, directory: str | Path) -> Path:
        """Write ``probe.safetensors`` and ``probe.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "std": self.std}
        tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / _TENSORS_FILE))
        meta = {
            "layers": list(self.layers),
            "kind": self.kind,
            "pool": self.pool,
            "max_len": self.max_len,
            "hidden_units": self.hidden_units,
            "threshold": self.threshold,
        }
        (directory / _META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Probe:
        """Read a probe written by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / _META_FILE).read_text())
        tensors = load_file(str(directory / _TENSORS_FILE))
        head = _make_head(meta["kind"], tensors["mean"].shape[0], meta["hidden_units"])
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        head.eval()
        return cls(
            layers=tuple(meta["layers"]),
            kind=meta["kind"],
            pool=meta["pool"],
            max_len=meta["max_len"],
            hidden_units=meta["hidden_units"],
            mean=tensors["mean"],
            std=tensors["std"],
            head=head,
            threshold=float(meta["threshold"]),
        )


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


def _log_loss(p: Sequence[float], y: Sequence[float]) -> float:
    pt = torch.tensor(list(p), dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    return float(nn.functional.binary_cross_entropy(pt, torch.tensor(list(y), dtype=torch.float64)))


def _columns(feature_layers: Sequence[int], layers: Sequence[int]) -> list[int]:
    position = {layer: j for j, layer in enumerate(feature_layers)}
    missing = [layer for layer in layers if layer not in position]
    if missing:
        raise ValueError(f"features lack layers {missing}; they hold {list(feature_layers)}")
    return [position[layer] for layer in layers]


def _fit_probe(
    feats: torch.Tensor, y: torch.Tensor, layers: tuple[int, ...], config: ProbeConfig
) -> Probe:
    x = feats.mean(dim=1)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    head = _fit_head((x - mean) / std, y, config)
    return Probe(
        layers=layers, kind=config.kind, pool=config.pool, max_len=config.max_len,
        hidden_units=config.hidden_units, mean=mean, std=std, head=head, threshold=0.5,
    )


def _rates(p: Sequence[float], y: Sequence[float], threshold: float) -> tuple[float, float]:
    """``(tpr, fpr)`` of the verdict ``p >= threshold`` (0.0 where a class is absent)."""
    pos = [pi >= threshold for pi, yi in zip(p, y) if yi]
    neg = [pi >= threshold for pi, yi in zip(p, y) if not yi]
    return (sum(pos) / len(pos) if pos else 0.0), (sum(neg) / len(neg) if neg else 0.0)


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
    parts = {k: torch.tensor(v, dtype=torch.long) for k, v in split_indices(labels, config.split, config.seed, groups).items()}
    for name in SPLITS:
        if len(set(y[parts[name]].tolist())) < 2:
            raise ValueError(f"too few prompts: the {name} split lacks one of the two classes")

    def scores(probe: Probe, cols: list[int], part: str) -> tuple[list[float], list[float]]:
        return probe.predict_proba_features(features[parts[part]][:, cols]).tolist(), y[parts[part]].tolist()

    best: tuple[tuple[float, float], tuple[int, ...]] | None = None
    tried = []
    for cand in candidates:
        cols = _columns(feature_layers, cand)
        sel_p, sel_y = scores(_fit_probe(features[parts["fit"]][:, cols], y[parts["fit"]], cand, config), cols, "select")
        score, loss = auroc(sel_p, sel_y), _log_loss(sel_p, sel_y)
        tried.append({"layers": list(cand), "select_auroc": score, "select_log_loss": loss})
        if best is None or (score, -loss) > best[0]:
            best = ((score, -loss), cand)
    assert best is not None
    (select_auroc, _), chosen = best
    cols = _columns(feature_layers, chosen)
    train_idx = torch.cat([parts["fit"], parts["select"]])
    probe = _fit_probe(features[train_idx][:, cols], y[train_idx], chosen, config)
    cal_p, cal_y = scores(probe, cols, "calibrate")
    probe.threshold = max(config.min_threshold, tpr_at_fpr(cal_p, cal_y, config.target_fpr)[1])
    cal_tpr, cal_fpr = _rates(cal_p, cal_y, probe.threshold)
    test_p, test_y = scores(probe, cols, "test")
    test_tpr, test_fpr = _rates(test_p, test_y, probe.threshold)
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

    1. ``fit``: every candidate layer set's classifier is trained here;
    2. ``select``: the candidate with the best AUROC here wins (ties: lower log-loss),
       and the returned probe is that layer set refitted on ``fit`` + ``select``;
    3. ``calibrate``: the threshold is the lowest score whose FPR here is at most
       ``config.target_fpr`` (never below ``config.min_threshold``);
    4. ``test``: never used for either choice; the report's ``auroc`` and
       ``tpr_at_threshold`` / ``fpr_at_threshold`` are measured here.

    Without ``layer_candidates`` the probe reads ``config.layers`` (or
    :func:`default_layers`).
    """
    num_layers = model.config.num_hidden_layers
    base = resolve_layers(config.layers or default_layers(num_layers), num_layers)
    candidates = [resolve_layers(c, num_layers) for c in layer_candidates] if layer_candidates else [base]
    needed = sorted({layer for c in candidates for layer in c})
    feats = extract_features(
        model, tokenizer, list(harmful_texts) + list(benign_texts), needed,
        pool=config.pool, batch_size=config.feature_batch_size, max_len=config.max_len,
    )
    labels = [1] * len(harmful_texts) + [0] * len(benign_texts)
    return train_probe_on_features(feats, labels, needed, config, layer_candidates=candidates, groups=groups)
