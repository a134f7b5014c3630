"""The operator's policy on what a job's ``safety`` object may ask.

A customer-scoped key is bound by these settings; an admin-scoped key is the operator and
may ask anything the schema allows (ablations such as ``mode: none``):

* **modes** — the organization's ``allowed_modes`` (set by an admin key on
  ``/v1/admin/organizations/{id}``), else ``GUARDTUNE_ALLOWED_MODES`` (default ``adaptive``,
  ``constant``). ``none`` (plain SFT, no regularization) is open to customer keys only where
  the operator lists it.
* **KL weight** — a customer may only move toward more regularization: ``kl_weight.min`` at
  or above the operator's floor ``GUARDTUNE_KL_WEIGHT_MIN``, ``kl_weight.max`` at or above
  the operator's ceiling ``GUARDTUNE_KL_WEIGHT_MAX`` (a lower ceiling would weaken the
  defence on exactly the harmful examples), and ``constant_kl_weight`` at or above the floor.
* **flagged share** — ``max_flagged_fraction`` may only be lower than
  ``GUARDTUNE_MAX_FLAGGED_FRACTION`` (when the operator set one); the job keeps the
  stricter of the two, which the scan stage enforces.
* **judge** — ``estimator: judge | both`` needs a judge endpoint or a local judge model;
  without either it is refused with code ``judge_unavailable`` (not a policy question).
* **risk weighting** — ``batch`` (the paper's batch mean, an ablation that dilutes the
  weights of harmful examples) only where it is the operator's ``GUARDTUNE_RISK_WEIGHTING``.

Each refusal is a 400 ``invalid_request_error`` with code ``safety_policy``, ``param`` the
refused field and a message naming the setting that forbids it.
"""

from __future__ import annotations

from api.deps import Caller
from api.jobs.schemas import SafetyIn
from core.errors import InvalidRequest
from core.jobs.config import CONSTANT_KL_WEIGHT, KlWeightBounds, SafetyConfig
from core.jobs.vocab import ErrorCode, SafetyMode
from core.settings import Settings
from core.vocab import KeyScope


def resolve_safety(
    requested: SafetyIn | None, settings: Settings, caller: Caller, org_modes: list[str] | None = None
) -> SafetyConfig:
    """The job's safety configuration: the request with the operator's defaults filled in,
    after checking it against the policy (customer keys; ``org_modes`` is the organization's
    override of the allowed modes) and the deployment (judge)."""
    s = requested or SafetyIn()
    floor, ceiling = settings.kl_weight_min, settings.kl_weight_max
    bounds = s.kl_weight or KlWeightBounds(min=floor, max=ceiling)
    constant = s.constant_kl_weight if "constant_kl_weight" in s.model_fields_set else max(CONSTANT_KL_WEIGHT, floor)
    operator_share = settings.max_flagged_fraction
    share = s.max_flagged_fraction
    if caller.scope != KeyScope.ADMIN:
        allowed, source = (
            (org_modes, "the organization's allowed_modes")
            if org_modes
            else (settings.allowed_modes, "GUARDTUNE_ALLOWED_MODES")
        )
        if s.mode not in allowed:
            _refuse(
                "safety.mode", f"mode {s.mode.value!r} is not open to customer keys", f"{source}={','.join(allowed)}"
            )
        if bounds.min < floor:
            _refuse(
                "safety.kl_weight.min",
                f"kl_weight.min {bounds.min} is below the operator's floor {floor}",
                f"GUARDTUNE_KL_WEIGHT_MIN={floor}; a customer may only raise it",
            )
        if bounds.max < ceiling:
            _refuse(
                "safety.kl_weight.max",
                f"kl_weight.max {bounds.max} is below the operator's ceiling {ceiling}",
                f"GUARDTUNE_KL_WEIGHT_MAX={ceiling}; a customer may only raise it",
            )
        if s.mode == SafetyMode.CONSTANT and constant < floor:
            _refuse(
                "safety.constant_kl_weight",
                f"constant_kl_weight {constant} is below the operator's floor {floor}",
                f"GUARDTUNE_KL_WEIGHT_MIN={floor}",
            )
        if share is not None and operator_share is not None and share > operator_share:
            _refuse(
                "safety.max_flagged_fraction",
                f"max_flagged_fraction {share} is above the operator's {operator_share}",
                f"GUARDTUNE_MAX_FLAGGED_FRACTION={operator_share}; a customer may only lower it",
            )
        if s.risk_weighting is not None and s.risk_weighting != settings.risk_weighting:
            _refuse(
                "safety.risk_weighting",
                f"risk_weighting {s.risk_weighting.value!r} is not open to customer keys",
                f"GUARDTUNE_RISK_WEIGHTING={settings.risk_weighting}",
            )
        if s.reference is not None and s.reference != settings.reference:
            _refuse(
                "safety.reference",
                f"reference {s.reference.value!r} is not open to customer keys",
                f"GUARDTUNE_REFERENCE={settings.reference}",
            )
    config = SafetyConfig(
        mode=s.mode,
        estimator=s.estimator,
        kl_weight=bounds,
        constant_kl_weight=constant,
        risk_weighting=s.risk_weighting or settings.risk_weighting,
        reference=s.reference or settings.reference,
        max_flagged_fraction=_stricter(share, operator_share),
    )
    has_judge = bool(settings.judge_base_url or settings.judge_local_model)
    if config.mode == SafetyMode.ADAPTIVE and config.uses_judge and not has_judge:
        raise InvalidRequest(
            f"safety.estimator {s.estimator.value!r} needs the judge, and this deployment has none configured "
            "(neither GUARDTUNE_JUDGE_BASE_URL nor GUARDTUNE_JUDGE_LOCAL_MODEL is set); use 'probe'.",
            code=ErrorCode.JUDGE_UNAVAILABLE,
            param="safety.estimator",
        )
    return config


def _stricter(a: float | None, b: float | None) -> float | None:
    present = [x for x in (a, b) if x is not None]
    return min(present) if present else None


def _refuse(param: str, what: str, policy: str) -> None:
    raise InvalidRequest(
        f"{param}: {what} under this deployment's safety policy ({policy}).", code="safety_policy", param=param
    )
