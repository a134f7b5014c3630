"""Probe heads: the classifier on pooled features, its config, and its persistence.

Standardized features (train-split mean and std, averaged over the probe's layer set)
go into a logistic regression (``kind="logistic"``) or a one-hidden-layer MLP
(``kind="mlp"``), trained with Adam on binary cross-entropy plus an L2 penalty on the
weights. A probe is an ensemble of ``config.heads`` such heads that
differ only in their seed (:func:`fit_heads`); its probability is the mean of theirs,
which removes most of a single head's dependence on its initialisation and minibatch
order. A :class:`Probe` is saved as ``probe.safetensors`` (tensors only, read back with
``safetensors.torch.load_file``: no pickle) plus ``probe.json`` (everything else);
files written before ensembles (one head, tensors ``head.*``) still load, and so do files
written before the weighting threshold (it then falls back to the reporting threshold). A
probe may carry the answer-side head (``Probe.answer``, ``safety.answer_head``), itself a
:class:`Probe`, saved beside it as ``answer.safetensors`` + ``answer.json``; a directory
without them loads with ``answer=None``.

Risk (:func:`risk_from_p`) maps the probe's probability to the 1-5 scale. A probe has
two thresholds: the reporting one (its harmful verdict, the scan's flag; calibrated for a
low false-positive rate) and the weighting one (:class:`Weighting`, calibrated for recall):
the ``"graded"`` mapping runs through both, so a line the reporting verdict misses but the
recall-oriented one catches gets a KL weight of at least the middle of the paper's clamps
instead of the floor, while the flag (and a flagged line's risk, 5) stays exactly the
reporting verdict's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from core.jobs.config import FLAG_THRESHOLD, PROBE_TARGET_RECALL, WEIGHTING_RISK, RiskMode
from safety.generation import PromptLike
from safety.probe.features import Pooling, extract_features, feature_columns

ProbeKind = Literal["logistic", "mlp"]

_log = logging.getLogger(__name__)
_STEM = "probe"
_ANSWER_STEM = "answer"


@dataclass(frozen=True)
class ProbeConfig:
    """Probe hyper-parameters.

    ``layers=None`` means :func:`safety.probe.features.default_layers`: the mean over the middle-to-late band
    of blocks (40 %-80 % of the depth). The defaults (content pooling, 512-unit MLP,
    light L2) are the ones that generalised best to unseen benchmark prompts on the
    default base model (``bench/results/probe_quality.json``). ``heads`` is the ensemble
    size (:func:`fit_heads`): a variance reduction, fixed a priori rather than tuned.
    ``batch_size`` is the classifier's minibatch; ``feature_batch_size`` the number of
    prompts per forward pass of the reference model. ``split`` is the share of the
    prompts that chooses the layers, sets the threshold and measures the report (the
    rest fits the classifier; see :func:`safety.probe.calibration.train_probe`). The operating threshold keeps
    the calibration split's FPR within ``target_fpr`` and is at least ``min_threshold``; the
    weighting threshold keeps the calibration split's recall at least ``target_recall``.
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
    target_recall: float = PROBE_TARGET_RECALL
    feature_batch_size: int = 16
    heads: int = 5


def risk_from_p(
    p: float, mode: RiskMode = "calibrated", threshold: float = 0.5, weight_threshold: float | None = None
) -> float:
    """Map a harmful probability to the 1-5 risk scale: ``1 + 4p`` (calibrated), the
    paper's verdict mapping, 5 if ``p >= threshold`` else 1 (binary), or
    :func:`graded_risk` through ``weight_threshold`` (default: ``threshold``) and
    ``threshold`` (graded)."""
    if mode == "binary":
        return 5.0 if p >= threshold else 1.0
    if mode == "calibrated":
        return 1.0 + 4.0 * p
    if mode == "graded":
        return graded_risk(p, threshold, threshold if weight_threshold is None else weight_threshold)
    raise ValueError(f"unknown risk mode {mode!r}")


def graded_risk(p: float, threshold: float, weight_threshold: float) -> float:
    """The graded risk of probability ``p``: 5 at or above the reporting ``threshold`` (the
    binary mapping's verdict), and below it piecewise linear from ``(0, 1)`` through
    ``(weight_threshold, WEIGHTING_RISK)`` (3.5: KL weight 0.5, the middle of the paper's
    clamps) towards ``(threshold, FLAG_THRESHOLD)`` (4, never reached below ``threshold``).

    Non-decreasing in ``p``, within [1, 5], and at least the binary risk everywhere: the
    scan flags (risk >= 4, the default flag threshold) exactly what the binary mapping
    flags and a flagged line keeps its full KL weight, while a line the reporting verdict
    passes but the recall-oriented weighting verdict catches gets at least the middle KL
    weight instead of the floor. A ``weight_threshold`` at or above ``threshold`` (an old
    probe without one) drops its anchor; one at or below 0 starts the line at 3.5.
    """
    if p >= threshold:
        return 5.0
    p = max(0.0, p)
    if weight_threshold >= threshold:
        anchors = [(0.0, 1.0)]
    elif weight_threshold <= 0.0:
        anchors = [(0.0, WEIGHTING_RISK)]
    else:
        anchors = [(0.0, 1.0), (weight_threshold, WEIGHTING_RISK)]
    anchors.append((threshold, FLAG_THRESHOLD))
    for (x0, r0), (x1, r1) in zip(anchors, anchors[1:]):
        if p <= x1:
            return min(r0 + (r1 - r0) * (p - x0) / (x1 - x0), math.nextafter(FLAG_THRESHOLD, 0.0))
    raise AssertionError("unreachable: p < threshold, the last anchor")


@dataclass(frozen=True)
class Weighting:
    """A probe's weighting threshold: the highest ``p`` whose verdict ``p >= threshold``
    keeps ``target_recall`` of the harmful prompts of the calibrate split, with the recall
    and the false-flag rate (share of benign prompts at or above it) of that verdict on
    the test split, which chose nothing."""

    threshold: float
    target_recall: float
    recall: float
    false_flag_rate: float


def _make_head(kind: ProbeKind, dim: int, hidden_units: int) -> nn.Module:
    """An untrained head: ``nn.Linear`` (logistic) or one ReLU hidden layer (mlp)."""
    if kind == "logistic":
        return nn.Linear(dim, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, hidden_units), nn.ReLU(), nn.Linear(hidden_units, 1))
    raise ValueError(f"unknown probe kind {kind!r}")


def head_seeds(config: ProbeConfig) -> list[int]:
    """The ensemble's seeds: ``config.seed + 1000 * k`` for ``k < config.heads`` (so a
    one-head probe is the head seeded ``config.seed``)."""
    if config.heads < 1:
        raise ValueError(f"a probe needs at least one head, not {config.heads}")
    return [config.seed + 1000 * k for k in range(config.heads)]


def fit_heads(x: torch.Tensor, y: torch.Tensor, config: ProbeConfig) -> list[nn.Module]:
    """One head per seed of :func:`head_seeds`, same data: Adam on BCE + ``weight_decay/2 *
    ||W||^2`` (weights only). Each head is trained as it would be alone: ``seed`` fixes its
    initialisation and its minibatch order, and its loss and Adam state are its own. The
    heads train side by side, their parameters stacked so one batched matmul serves them
    all (the probe recipe fits a dozen ensembles, and alone each step is mostly overhead)."""
    heads, rng_states = [], []
    for seed in head_seeds(config):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads.append(_make_head(config.kind, x.shape[1], config.hidden_units))
            rng_states.append(torch.get_rng_state())
    stacked = {
        name: nn.Parameter(torch.stack([dict(h.named_parameters())[name].detach() for h in heads]))
        for name, _ in heads[0].named_parameters()
    }
    opt = torch.optim.Adam(stacked.values(), lr=config.lr)
    weights = [p for name, p in stacked.items() if name.endswith("weight")]
    for _ in range(config.epochs):
        orders = []
        for k, state in enumerate(rng_states):
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(state)
                orders.append(torch.randperm(len(x)))
                rng_states[k] = torch.get_rng_state()
        for idx in torch.stack(orders).split(config.batch_size, dim=1):
            per_head = F.binary_cross_entropy_with_logits(_stacked_logits(stacked, x[idx]), y[idx], reduction="none")
            loss = per_head.mean(1).sum() + 0.5 * config.weight_decay * sum((w**2).sum() for w in weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        for k, head in enumerate(heads):
            for name, p in head.named_parameters():
                p.copy_(stacked[name][k])
    return [head.eval() for head in heads]


def _stacked_logits(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits ``[heads, batch]`` of stacked heads (``_make_head``'s parameters, each with a
    leading head dimension) on ``x`` ``[heads, batch, dim]``."""

    def linear(prefix: str, inputs: torch.Tensor) -> torch.Tensor:
        weight, bias = params[f"{prefix}weight"], params[f"{prefix}bias"]
        return torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))

    if "weight" in params:  # logistic: nn.Linear
        return linear("", x).squeeze(-1)
    return linear("2.", torch.relu(linear("0.", x))).squeeze(-1)  # mlp: Linear, ReLU, Linear


@dataclass
class Probe:
    """A trained probe: which states to read and the classifiers on top (an ensemble:
    the harmful probability is the mean of the heads' probabilities)."""

    layers: tuple[int, ...]
    kind: ProbeKind
    pool: Pooling
    max_len: int
    hidden_units: int
    mean: torch.Tensor
    std: torch.Tensor
    heads: list[nn.Module]
    threshold: float
    weighting: Weighting | None = None
    answer: Probe | None = None  # the answer-side head (``safety.answer_head``), stored with the probe

    @property
    def weight_threshold(self) -> float:
        """The weighting threshold; the reporting one for a probe calibrated without it."""
        return self.weighting.threshold if self.weighting is not None else self.threshold

    def predict_proba_features(
        self, features: torch.Tensor, feature_layers: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Harmful probabilities from :func:`extract_features` output: for exactly
        ``self.layers``, or for ``feature_layers`` (a superset; columns are picked)."""
        if feature_layers is not None:
            features = features[:, feature_columns(feature_layers, self.layers)]
        if features.shape[1:] != (len(self.layers), self.mean.shape[0]):
            raise ValueError(
                f"features of shape {tuple(features.shape[1:])} do not fit this probe "
                f"({len(self.layers)} layers x {self.mean.shape[0]} hidden): wrong model?"
            )
        return self.head_probas(features).mean(dim=0)

    def head_probas(self, features: torch.Tensor) -> torch.Tensor:
        """``[heads, N]``: each head's harmful probability for features of exactly
        ``self.layers``."""
        x = (features.mean(dim=1) - self.mean) / self.std
        with torch.no_grad():
            return torch.stack([torch.sigmoid(head(x).squeeze(-1)) for head in self.heads])

    def predict_proba(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[PromptLike],
        batch_size: int = 16,
        max_tokens: int | None = None,
    ) -> list[float]:
        """Harmful probability of each prompt (a string or a message list), read in batches
        of at most ``batch_size`` prompts and ``max_tokens`` padded tokens."""
        feats = extract_features(
            model,
            tokenizer,
            prompts,
            self.layers,
            pool=self.pool,
            batch_size=batch_size,
            max_len=self.max_len,
            max_tokens=max_tokens,
        )
        return [float(p) for p in self.predict_proba_features(feats)]

    def risk(self, p: float, mode: RiskMode = "calibrated") -> float:
        """:func:`risk_from_p` with this probe's reporting and weighting thresholds."""
        return risk_from_p(p, mode, self.threshold, self.weight_threshold)

    def save(self, directory: str | Path) -> Path:
        """Write ``probe.safetensors`` and ``probe.json`` into ``directory``, and the
        answer-side head, when there is one, as ``answer.safetensors`` and ``answer.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._write(directory, _STEM)
        if self.answer is not None:
            self.answer._write(directory, _ANSWER_STEM)
        return directory

    def _write(self, directory: Path, stem: str) -> None:
        tensors = {"mean": self.mean, "std": self.std}
        for i, head in enumerate(self.heads):
            tensors.update({f"heads.{i}.{k}": v for k, v in head.state_dict().items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / f"{stem}.safetensors"))
        meta = {
            "layers": list(self.layers),
            "kind": self.kind,
            "pool": self.pool,
            "max_len": self.max_len,
            "hidden_units": self.hidden_units,
            "threshold": self.threshold,
            "heads": len(self.heads),
            "weighting": asdict(self.weighting) if self.weighting is not None else None,
        }
        (directory / f"{stem}.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Probe:
        """Read a probe written by :meth:`save`, or by the one-head format before it
        (no ``heads`` in ``probe.json``; tensors ``head.*``). A file without a weighting
        threshold loads with ``weighting=None`` (weights use the reporting threshold),
        and says so in the log; a directory without ``answer.json`` (written before the
        answer-side head) loads with ``answer=None``."""
        directory = Path(directory)
        probe = cls._read(directory, _STEM)
        if (directory / f"{_ANSWER_STEM}.json").is_file():
            probe.answer = cls._read(directory, _ANSWER_STEM)
        return probe

    @classmethod
    def _read(cls, directory: Path, stem: str) -> Probe:
        meta = json.loads((directory / f"{stem}.json").read_text())
        tensors = load_file(str(directory / f"{stem}.safetensors"))
        prefixes = [f"heads.{i}." for i in range(meta["heads"])] if "heads" in meta else ["head."]
        heads = []
        for prefix in prefixes:
            head = _make_head(meta["kind"], tensors["mean"].shape[0], meta["hidden_units"])
            head.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            heads.append(head.eval())
        weighting = meta.get("weighting")
        if weighting is None:
            _log.warning(
                "probe %s has no weighting threshold (calibrated before it existed): "
                "graded risk falls back to the reporting threshold %.3f",
                directory,
                meta["threshold"],
            )
        return cls(
            layers=tuple(meta["layers"]),
            kind=meta["kind"],
            pool=meta["pool"],
            max_len=meta["max_len"],
            hidden_units=meta["hidden_units"],
            mean=tensors["mean"],
            std=tensors["std"],
            heads=heads,
            threshold=float(meta["threshold"]),
            weighting=Weighting(**weighting) if weighting is not None else None,
        )
