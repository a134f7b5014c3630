"""Activation probe: a harmful-vs-benign classifier on the reference model's hidden states.

The one public surface of the probe; callers import from ``safety.probe``. The parts:

* :mod:`safety.probe.features`: which layers to read and the pooled hidden states
  (:func:`extract_features`, :func:`span_features`; forward hooks that stop after the deepest layer needed).
* :mod:`safety.probe.heads`: :class:`ProbeConfig`, the classifier ensemble (:func:`fit_heads`) and
  :class:`Probe`, persisted as ``probe.safetensors`` + ``probe.json`` (no pickle), and the
  probability-to-risk mappings (:func:`risk_from_p`, :func:`graded_risk`).
* :mod:`safety.probe.calibration`: AUROC / TPR-at-FPR metrics, the fit / select /
  calibrate / test split, the layer search and the two thresholds, reporting (for a
  false-positive rate) and weighting (for a recall) (:func:`train_probe`).

How a deployment's probe is configured and what it is trained on is
``safety.probe_recipe``, the one recipe.
"""

from safety.probe.calibration import (
    SPLITS,
    ProbeReport,
    auroc,
    split_indices,
    threshold_for_recall,
    tpr_at_fpr,
    train_probe,
    train_probe_on_features,
)
from safety.probe.features import (
    Pooling,
    default_layers,
    extract_features,
    layer_candidates,
    resolve_layers,
    span_features,
)
from safety.probe.heads import (
    Probe,
    ProbeConfig,
    ProbeKind,
    RiskMode,
    Weighting,
    graded_risk,
    risk_from_p,
)

__all__ = [
    "SPLITS",
    "Pooling",
    "Probe",
    "ProbeConfig",
    "ProbeKind",
    "ProbeReport",
    "RiskMode",
    "Weighting",
    "auroc",
    "default_layers",
    "extract_features",
    "span_features",
    "graded_risk",
    "layer_candidates",
    "resolve_layers",
    "risk_from_p",
    "split_indices",
    "threshold_for_recall",
    "tpr_at_fpr",
    "train_probe",
    "train_probe_on_features",
]
