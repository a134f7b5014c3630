"""Probe heads: the classifier on pooled features, its config, and its persistence.

Standardized features (train-split mean and std, averaged over the probe's layer set)
go into a logistic regression (``kind="logistic"``) or a one-hidden-layer MLP
(``kind="mlp"``), trained with Adam on binary cross-entropy plus an L2 penalty on the
weights (:func:`fit_head`). A probe is an ensemble of ``config.heads`` such heads that
differ only in their seed (:func:`fit_heads`); its probability is the mean of theirs,
which removes most of a single head's dependence on its initialisation and minibatch
order. A :class:`Probe` is saved as ``probe.safetensors`` (tensors only, read back with
``safetensors.torch.load_file``: no pickle) plus ``probe.json`` (everything else);
files written before ensembles (one head, tensors ``head.*``) still load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from safety.generation import PromptLike
from safety.probe.features import Pooling, extract_features, feature_columns

ProbeKind = Literal["logistic", "mlp"]
RiskMode = Literal["calibrated", "binary"]

_TENSORS_FILE = "probe.safetensors"
_META_FILE = "probe.json"


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
    heads: int = 5


def risk_from_p(p: float, mode: RiskMode = "calibrated", threshold: float = 0.5) -> float:
    """Map a harmful probability to the 1-5 risk scale: ``1 + 4p`` (calibrated) or the
    paper's verdict mapping, 5 if ``p >= threshold`` else 1 (binary)."""
    if mode == "binary":
        return 5.0 if p >= threshold else 1.0
    if mode == "calibrated":
        return 1.0 + 4.0 * p
    raise ValueError(f"unknown risk mode {mode!r}")


def _make_head(kind: ProbeKind, dim: int, hidden_units: int) -> nn.Module:
    """An untrained head: ``nn.Linear`` (logistic) or one ReLU hidden layer (mlp)."""
    if kind == "logistic":
        return nn.Linear(dim, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, hidden_units), nn.ReLU(), nn.Linear(hidden_units, 1))
    raise ValueError(f"unknown probe kind {kind!r}")


def fit_head(x: torch.Tensor, y: torch.Tensor, config: ProbeConfig, seed: int) -> nn.Module:
    """Adam on BCE + ``weight_decay/2 * ||W||^2`` (weights only); ``seed`` fixes the
    initialisation and the minibatch order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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


def head_seeds(config: ProbeConfig) -> list[int]:
    """The ensemble's seeds: ``config.seed + 1000 * k`` for ``k < config.heads`` (so a
    one-head probe is the head seeded ``config.seed``)."""
    if config.heads < 1:
        raise ValueError(f"a probe needs at least one head, not {config.heads}")
    return [config.seed + 1000 * k for k in range(config.heads)]


def fit_heads(x: torch.Tensor, y: torch.Tensor, config: ProbeConfig) -> list[nn.Module]:
    """One :func:`fit_head` per seed of :func:`head_seeds`, same data."""
    return [fit_head(x, y, config, seed) for seed in head_seeds(config)]


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
        self, model: Any, tokenizer: Any, prompts: Sequence[PromptLike], batch_size: int = 16
    ) -> list[float]:
        """Harmful probability of each prompt (a string or a message list)."""
        feats = extract_features(
            model,
            tokenizer,
            prompts,
            self.layers,
            pool=self.pool,
            batch_size=batch_size,
            max_len=self.max_len,
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
        for i, head in enumerate(self.heads):
            tensors.update({f"heads.{i}.{k}": v for k, v in head.state_dict().items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / _TENSORS_FILE))
        meta = {
            "layers": list(self.layers),
            "kind": self.kind,
            "pool": self.pool,
            "max_len": self.max_len,
            "hidden_units": self.hidden_units,
            "threshold": self.threshold,
            "heads": len(self.heads),
        }
        (directory / _META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Probe:
        """Read a probe written by :meth:`save`, or by the one-head format before it
        (no ``heads`` in ``probe.json``; tensors ``head.*``)."""
        directory = Path(directory)
        meta = json.loads((directory / _META_FILE).read_text())
        tensors = load_file(str(directory / _TENSORS_FILE))
        prefixes = [f"heads.{i}." for i in range(meta["heads"])] if "heads" in meta else ["head."]
        heads = []
        for prefix in prefixes:
            head = _make_head(meta["kind"], tensors["mean"].shape[0], meta["hidden_units"])
            head.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            heads.append(head.eval())
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
        )
